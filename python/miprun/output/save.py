"""Write a pruned model, its tokenizer and its report into a folder, atomically.

Everything is written into a temporary folder beside the output folder and renamed into
place only when complete, so a failure at any point leaves no partial output and an
existing output (when replacing it) intact. The input model folder is never written to.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from miprun.output.remote_code import carry_remote_code
__all__ = ["OutputDirError", "check_output_dir", "atomic_output_dir", "save_pruned", "write_json"]


class OutputDirError(ValueError):
    """The output folder cannot be used (exists, is the input folder, ...); the message says why and what to do."""


def _absolute(path: str | os.PathLike) -> Path:
    # Resolve the parent only: the last component may be a symlink, which must not be followed.
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))  # abspath also folds "." and ".."
    return p.parent.resolve() / p.name


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False,
                     source_dir: str | os.PathLike | None = None) -> Path:
    """Validate an output folder before any long work; return its absolute path.

    Parameters
    ----------
    out_dir : path
        Folder to create (or to replace, with ``overwrite``).
    overwrite : bool
        Allow replacing an existing ``out_dir``.
    source_dir : path, optional
        The input model's folder: ``out_dir`` may not be it, lie inside it, or (when
        replacing) contain it.

    Returns
    -------
    pathlib.Path
        ``out_dir`` as an absolute path (its parent resolved).

    Raises
    ------
    OutputDirError
        ``out_dir`` exists and ``overwrite`` is false, is a file or a symlink, is or is
        inside the input folder, would delete the input folder, or its parent is not writable.
    """
    out = _absolute(out_dir)
    if out.parent == out:
        raise OutputDirError(f"out_dir {out} is a filesystem root; choose a folder to create")
    if source_dir is not None:
        src = Path(source_dir).expanduser().resolve()
        real_out = Path(os.path.realpath(out))
        if _is_within(real_out, src):
            where = "is" if real_out == src else "is inside"
            raise OutputDirError(
                f"out_dir {out} {where} the input model folder {src}; the input is never written to: "
                f"choose a folder outside it"
            )
        if overwrite and _is_within(src, real_out):
            raise OutputDirError(
                f"replacing out_dir {out} would delete the input model folder {src} inside it; choose another folder"
            )
    if out.is_symlink():
        raise OutputDirError(f"out_dir {out} is a symlink; give the real folder path or a new folder")
    if out.exists():
        if not out.is_dir():
            raise OutputDirError(f"out_dir {out} exists and is not a folder; choose a folder path")
        if not overwrite:
            raise OutputDirError(
                f"out_dir {out} already exists; pass overwrite=True (--overwrite) to replace it, "
                f"or choose another folder"
            )
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot create out_dir {out}: {ancestor} is not writable")
    return out


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    return missing


def _commit(tmp: Path, out: Path, overwrite: bool) -> None:
    # The folder may have appeared while the output was being written.
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return
    if not overwrite:
        raise OutputDirError(f"out_dir {out} appeared while writing; pass overwrite=True to replace it")
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False,
                      source_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that becomes ``out_dir`` when the block succeeds.

    On success the temporary folder is renamed to ``out_dir`` (an existing one, with
    ``overwrite``, is moved aside first and deleted after the rename). On any exception the
    temporary folder, and parent folders this call created, are removed and an existing
    ``out_dir`` is left as it was. Checks are those of :func:`check_output_dir`.

    Yields
    ------
    pathlib.Path
        The temporary folder to write into (same filesystem as ``out_dir``, so the final
        rename is atomic).
    """
    out = check_output_dir(out_dir, overwrite=overwrite, source_dir=source_dir)
    created = _missing_folders(out.parent)
    # mkdir (not mkdtemp) so the folder gets the usual permissions from the umask, not 0700.
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        yield tmp
        _commit(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:
            with contextlib.suppress(OSError):
                p.rmdir()  # only removes it if still empty
        raise


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as strict JSON (NaN and infinities become null; numpy/torch/Path values converted)."""
    from miprun.output.report import to_jsonable

    path = Path(path)
    path.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


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
                plots: Mapping[str, Callable[[Path], Any] | bytes] | None = None) -> Path:
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
    with atomic_output_dir(out_dir, overwrite=overwrite, source_dir=source_dir) as tmp:
        model.save_pretrained(tmp)
        carry_remote_code(tmp, source_dir)
        if not (tmp / "config.json").exists() or not any(tmp.glob("*.safetensors")):
            raise RuntimeError(f"save_pretrained did not write config.json and safetensors weights into {tmp}")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_report_and_plots(tmp, report, plots)
    return _absolute(out_dir)


def write_report_and_plots(folder: Path, report: dict | None, plots: dict | None) -> None:
    """Write ``report.json`` and each plot (bytes, or a function writing the file) into ``folder``."""
    if report is not None:
        write_json(folder / "report.json", report)
    for name, plot in (plots or {}).items():
        if isinstance(plot, (bytes, bytearray)):
            (folder / name).write_bytes(plot)
        else:
            plot(folder / name)
