"""Where the pruned checkpoint goes and what is written beside it, validated once."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from miprun.util.options import Options

__all__ = ["OutputOptions", "FORMATS"]

#: What ``prune`` writes: a Hugging Face checkpoint, or (for a GGUF input) a GGUF file.
FORMATS = ("hf", "gguf")


@dataclass(frozen=True)
class OutputOptions(Options):
    """The output.

    Attributes
    ----------
    out_dir : str or None
        Folder of the pruned checkpoint; None: nothing is written.
    overwrite : bool
        Replace an earlier miprun output (or an empty folder) at ``out_dir``.
    plots : bool
        Write the score-table and single-block plots beside the report.
    format : str
        ``"hf"`` (default): a Hugging Face checkpoint (safetensors, config, tokenizer);
        ``"gguf"``: for a GGUF input, a GGUF file holding the input's kept blocks as they
        are (same quantisation), renumbered.
    max_ppl_ratio : float or None
        Refuse to write a pruned model whose perplexity on the held-back calibration
        windows exceeds this many times the unpruned model's (in every placement; None or
        inf: no check). Default 50: past that the model is broken, not pruned.
    """

    out_dir: str | None = None
    overwrite: bool = False
    plots: bool = True
    format: str = "hf"
    max_ppl_ratio: float | None = 50.0

    def __post_init__(self) -> None:
        if self.out_dir is not None:
            if not isinstance(self.out_dir, (str, os.PathLike)) or not os.fspath(self.out_dir):
                raise ValueError(f"out_dir must be a folder path, got {self.out_dir!r}")
            object.__setattr__(self, "out_dir", os.fspath(self.out_dir))
        for name in ("overwrite", "plots"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        r = self.max_ppl_ratio
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or math.isnan(r) or r < 1):
            raise ValueError(f"max_ppl_ratio must be a number >= 1 (inf or None: no check), got {r!r}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
