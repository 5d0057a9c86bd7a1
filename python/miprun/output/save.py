"""Write a pruned model, its tokenizer and its report into a folder, atomically.

Everything is written into a temporary folder beside the output folder and renamed into
place only when complete, so a failure at any point leaves no partial output and an
existing output (when replacing it) intact. The input model folder is never written to.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from miprun.output.guard import absolute_path, atomic_output_dir
from miprun.output.remote_code import carry_remote_code
from miprun.util.jsonio import write_json

__all__ = ["save_pruned", "write_report_and_plots"]


def _source_of(model) -> Path | None:
    """The model's own folder when it was loaded from a local one (``name_or_path``)."""
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if name and Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    return None


def _check_plot_name(name: str) -> None:
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"plot name {name!r} must be a plain file name such as 'score_table.png'")


def save_pruned(model, tokenizer, out_dir: str | os.PathLike, *, report: Mapping[str, Any] | None = None,
                overwrite: bool = False, source_dir: str | os.PathLike | None = None,
                plots: Mapping[str, Callable[[Path], Any] | bytes] | None = None, protect=()) -> Path:
    """Save a (pruned) model, its tokenizer, ``report.json`` and plots into ``out_dir``, atomically.

    The model is written with ``save_pretrained`` (safetensors weights, ``config.json``,
    ``generation_config.json``), so ``AutoModelForCausalLM.from_pretrained(out_dir)`` loads it.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The model to save.
    tokenizer : transformers tokenizer or None
        Saved beside the model when given.
    out_dir : path
        Output folder; must not exist unless ``overwrite``.
    report : mapping, optional
        Written as ``report.json`` (see :func:`miprun.report.build_report`).
    overwrite : bool
        Replace an existing ``out_dir`` (atomically: the old one is removed only after the
        new one is in place).
    source_dir : path, optional
        The input model folder, which ``out_dir`` may not be or lie in. Defaults to the
        folder the model was loaded from, when that is a local folder.
    protect : sequence of paths
        Other inputs (the calibration source) that ``out_dir`` may not overlap.
    plots : mapping of file name to callable or bytes, optional
        Each callable is called with the destination path and must write the file there
        (e.g. from :func:`miprun.report.standard_plots`); bytes are written as they are.

    Returns
    -------
    pathlib.Path
        The absolute path of ``out_dir``.

    Raises
    ------
    OutputDirError
        See :func:`check_output_dir`. Any error while writing propagates after cleanup.
    """
    if source_dir is None:
        source_dir = _source_of(model)
    for name in plots or {}:
        _check_plot_name(name)
    with atomic_output_dir(out_dir, overwrite=overwrite, source_dir=source_dir, protect=protect) as tmp:
        model.save_pretrained(tmp)
        carry_remote_code(tmp, source_dir)
        if not (tmp / "config.json").exists() or not any(tmp.glob("*.safetensors")):
            raise RuntimeError(f"save_pretrained did not write config.json and safetensors weights into {tmp}")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_report_and_plots(tmp, report, plots)
    return absolute_path(out_dir)


def write_report_and_plots(folder: Path, report, plots: dict | None) -> None:
    """Write each plot (bytes, or a function writing the file), then ``report.json``, into ``folder``.

    ``report`` is a dict or a function returning one: called last, so that a report can
    record the time spent saving.
    """
    for name, plot in (plots or {}).items():
        if isinstance(plot, (bytes, bytearray)):
            (folder / name).write_bytes(plot)
        else:
            plot(folder / name)
    if report is not None:
        write_json(folder / "report.json", report() if callable(report) else report)
