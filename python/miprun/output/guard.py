"""The one guarded writer: every file and folder miprun writes goes through these checks first.

The rules, for ``prune``, ``score``, ``eval --json``, ``compare`` and anything added later:

- never write into or over the input model, the calibration source, or a folder holding
  either of them (``protect``);
- an existing output is replaced only with ``overwrite``, and only when it is an earlier
  output of miprun (a folder holding miprun's ``report.json`` or ``compare.json``, a JSON
  file carrying :data:`MARKER`) or an empty folder; anything else is refused with a message
  that names what is there;
- a folder is written into a temporary folder beside it and renamed into place when
  complete; SIGTERM (``timeout``, Slurm) is handled like Ctrl-C, so an interrupted run leaves
  no temporary folder and the previous output intact; a temporary folder left by a run that
  was killed (SIGKILL) is removed by the next run for the same output.

All checks run before any long work: call :func:`check_output_dir` or
:func:`check_output_file` first, write later.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from miprun.util.jsonio import write_json

__all__ = ["MARKER", "OutputDirError", "Terminated", "check_output_dir", "check_output_file", "atomic_output_dir",
           "write_output_json", "sigterm_raises", "protected_paths", "absolute_path"]

#: Key that marks a JSON file as written by miprun (its value says which kind).
MARKER = "miprun_output"
_OUTPUT_FILES = ("report.json", "compare.json")
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")


class OutputDirError(ValueError):
    """The output cannot be written there (exists, overlaps the input, ...); the message says why and what to do."""


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt so that cleanup runs."""


def absolute_path(path: str | os.PathLike) -> Path:
    # Resolve the parent only: the last component may be a symlink, which must not be followed.
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))  # abspath also folds "." and ".."
    return p.parent.resolve() / p.name


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def protected_paths(*paths) -> list[Path]:
    """The existing local paths among ``paths`` (model folders or files, calibration sources), resolved."""
    out = []
    for p in paths:
        if isinstance(p, (str, os.PathLike)) and os.path.exists(os.path.expanduser(os.fspath(p))):
            out.append(Path(os.path.realpath(os.path.expanduser(os.fspath(p)))))
    return out


def _check_protected(out: Path, protect: Sequence[Path], what: str, model: Path | None = None) -> None:
    real = Path(os.path.realpath(out))
    for src in ([model] if model is not None else []) + list(protect):
        name = "the input model folder" if src == model else "an input"
        if _within(real, src):
            where = "is" if real == src else "is inside"
            raise OutputDirError(f"{what} {out} {where} {name} {src}; miprun never writes into its inputs: "
                                 f"choose a path outside it")
        if _within(src, real):
            raise OutputDirError(f"{what} {out} holds {name} {src}; writing there could destroy it: "
                                 f"choose another path")


def _is_miprun_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and (MARKER in data or ("format_version" in data and "pruned_blocks" in data))


def _describe(folder: Path, limit: int = 5) -> str:
    names = sorted(p.name for p in folder.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _check_replaceable_dir(out: Path) -> None:
    """``out`` exists: allow replacing it only when it is empty or an earlier miprun output."""
    if not any(out.iterdir()):
        return
    if any(_is_miprun_json(out / name) for name in _OUTPUT_FILES):
        return
    raise OutputDirError(f"--out {out} exists and is not an earlier miprun output (it holds {_describe(out)}); "
                         f"--overwrite only replaces a folder miprun wrote or an empty one: choose another folder")


def _clear_stale(out: Path) -> None:
    """Remove temporary folders that runs killed while writing ``out`` left beside it; refuse a live writer."""
    if not out.parent.is_dir():
        return
    for p in out.parent.iterdir():
        m = _TMP.match(p.name)
        if not m or m.group("name") != out.name or not p.is_dir():
            continue
        pid = int(m.group("pid")) if m.group("pid") else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            raise OutputDirError(f"another process (pid {pid}) is writing {out} (its temporary folder {p} exists); "
                                 f"wait for it to finish or choose another --out")
        if m.group("kind") == "old" and not os.path.lexists(out):
            # killed between moving the earlier output aside and renaming the new one into place
            os.rename(p, out)
            warnings.warn(f"restored {out} from {p}, left by a run killed while replacing it", RuntimeWarning,
                          stacklevel=4)
            continue
        shutil.rmtree(p, ignore_errors=True)
        warnings.warn(f"removed {p}, the unfinished output of an interrupted run", RuntimeWarning, stacklevel=4)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False,
                     source_dir: str | os.PathLike | None = None, protect: Sequence = ()) -> Path:
    """Validate an output folder before any long work; return its absolute path.

    Parameters
    ----------
    out_dir : path
        Folder to create (or to replace, with ``overwrite``: only an earlier miprun output
        or an empty folder).
    overwrite : bool
        Allow replacing an existing ``out_dir``.
    source_dir : path, optional
        The input model's folder (protected, as every path in ``protect``).
    protect : sequence of paths
        Inputs that must not be written into, over, or replaced with a folder holding them.

    Raises
    ------
    OutputDirError
        With a message that says what is wrong and what to do.
    """
    out = absolute_path(out_dir)
    if out.parent == out:
        raise OutputDirError(f"out_dir {out} is a filesystem root; choose a folder to create")
    model = protected_paths(source_dir)
    _check_protected(out, protected_paths(*protect), "out_dir", model[0] if model else None)
    if out.is_symlink():
        raise OutputDirError(f"out_dir {out} is a symlink; give the real folder path or a new folder")
    _clear_stale(out)  # first: it may restore an earlier output that a killed run had moved aside
    if out.exists():
        if not out.is_dir():
            raise OutputDirError(f"out_dir {out} exists and is not a folder; choose a folder path")
        if not overwrite:
            raise OutputDirError(f"out_dir {out} already exists; pass overwrite=True (--overwrite) to replace an "
                                 f"earlier miprun output, or choose another folder")
        _check_replaceable_dir(out)
    _check_writable(out)
    return out


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False, protect: Sequence = ()) -> Path:
    """Validate an output file (JSON results) before any long work; return its absolute path.

    An existing file is replaced only with ``overwrite`` and only when miprun wrote it.
    ``protect[0]``, when given, is the input model; the rest other inputs.
    """
    out = absolute_path(path)
    _check_protected(out, protected_paths(*protect[1:]), "output file", next(iter(protected_paths(*protect[:1])), None))
    if out.is_dir():
        raise OutputDirError(f"output file {out} is a folder; give a file name such as results.json")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputDirError(f"output file {out} already exists; pass --overwrite to replace a file miprun "
                                 f"wrote earlier, or choose another name")
        if out.is_symlink() or not _is_miprun_json(out):
            raise OutputDirError(f"output file {out} exists and was not written by miprun; --overwrite only replaces "
                                 f"miprun's own results: choose another name")
    if not out.parent.is_dir():
        raise OutputDirError(f"output file {out}: folder {out.parent} does not exist; create it first")
    _check_writable(out)
    return out


def _check_writable(out: Path) -> None:
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot write {out}: {ancestor} is not writable")


def write_output_json(path: str | os.PathLike, data: dict, *, kind: str, overwrite: bool = False,
                      protect: Sequence = ()) -> Path:
    """Check ``path`` (:func:`check_output_file`) and write ``data`` there with the miprun marker, atomically."""
    out = check_output_file(path, overwrite=overwrite, protect=protect)
    return write_json(out, {MARKER: kind, **data})


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    _check_replaceable_dir(out)
    old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False,
                      source_dir: str | os.PathLike | None = None, protect: Sequence = ()) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that becomes ``out_dir`` when the block succeeds.

    On success the temporary folder is renamed to ``out_dir`` (an earlier output, with
    ``overwrite``, is moved aside first and deleted after the rename). On any exception,
    Ctrl-C or SIGTERM, the temporary folder and the parent folders this call created are
    removed and an existing ``out_dir`` is left as it was. Checks are those of
    :func:`check_output_dir`.

    Yields
    ------
    pathlib.Path
        The temporary folder to write into (same filesystem as ``out_dir``, so the final
        rename is atomic). Its name holds this process's id, so that the next run can tell
        a killed run's leftovers from a live writer's folder.
    """
    out = check_output_dir(out_dir, overwrite=overwrite, source_dir=source_dir, protect=protect)
    created = _missing_folders(out.parent)
    # mkdir (not mkdtemp) so the folder gets the usual permissions from the umask, not 0700.
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with sigterm_raises():
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
