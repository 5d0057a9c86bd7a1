"""Access to the compiled core, ``miprun._core``.

The package imports without it (pure-Python parts keep working); only calling a
native function raises, with instructions on how to build it. A core built from
another version of the sources is refused the same way.
"""

from __future__ import annotations

import functools
import importlib
import re
from importlib.metadata import PackageNotFoundError, version as dist_version
from pathlib import Path
from types import ModuleType

_BUILD_HINT = (
    "miprun's native core (miprun._core) is not built. Install the package with "
    "`pip install .` from the source tree (needs a C++17 compiler and CMake), or, "
    "for development, run `scripts/build_inplace.sh` and put `python/` on PYTHONPATH."
)

_core: ModuleType | None = None
_error: ImportError | None = None


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """The package's version: pyproject.toml's when running from the source tree, else the installed one's.

    pyproject.toml is the one source of the version; the native core gets it at build time.
    """
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():
        version = _pyproject_version(pyproject.read_text(encoding="utf-8"))
        if version is not None:
            return version
    try:
        return dist_version("miprun")
    except PackageNotFoundError:
        return "unknown"


def _pyproject_version(text: str) -> str | None:
    """``version`` of the ``[project]`` table of a miprun pyproject.toml, or None."""
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # Python 3.10: the two lines this needs, without a TOML parser
        project = re.search(r"^\[project\][ \t]*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        if project is None or not re.search(r'^name\s*=\s*"miprun"', project.group(1), re.M):
            return None
        found = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M)
        return found.group(1) if found else None
    project = tomllib.loads(text).get("project", {})
    return project.get("version") if project.get("name") == "miprun" else None


def native_available() -> bool:
    """True when ``miprun._core`` can be imported."""
    try:
        core()
    except ImportError:
        return False
    return True


def core() -> ModuleType:
    """Return the native module, or raise ``ImportError`` saying how to build it.

    A core whose ``__version__`` is not :func:`package_version` (built from other sources)
    is refused: its functions may not match what the Python side calls.
    """
    global _core, _error
    if _core is not None:
        return _core
    if _error is None:  # remembered so we do not retry on every call
        try:
            module = importlib.import_module("miprun._core")
        except ImportError as exc:
            _error = ImportError(f"{_BUILD_HINT} (import failed: {exc})")
            _error.__cause__ = exc
        else:
            built, wanted = getattr(module, "__version__", "unknown"), package_version()
            if built == wanted:
                _core = module
                return _core
            _error = ImportError(f"miprun._core is version {built} but the package is {wanted}: "
                                 "rebuild it with `pip install .` (or scripts/build_inplace.sh)")
    raise _error.with_traceback(None)
