"""How calibration windows are drawn from a text source, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from miprun.util.options import Options, check_int

__all__ = ["CalibrationOptions"]


@dataclass(frozen=True)
class CalibrationOptions(Options):
    """Calibration windows.

    Attributes
    ----------
    n_samples : int
        Windows drawn (default 128).
    seq_len : int or None
        Tokens per window; None: ``min(2048, max_position_embeddings)``.
    seed : int
        Seeds which windows are drawn.
    """

    n_samples: int = 128
    seq_len: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("n_samples", self.n_samples, low=1)
        check_int("seq_len", self.seq_len, low=1, allow_none=True)
        check_int("seed", self.seed)
