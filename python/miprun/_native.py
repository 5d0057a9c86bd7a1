"""Access to the compiled core, ``miprun._core``.

The package imports without it (pure-Python parts keep working); only calling a
native function raises, with instructions on how to build it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_BUILD_HINT = (
    "miprun's native core (miprun._core) is not built. Install the package with "
    "`pip install .` from the source tree (needs a C++17 compiler and CMake), or, "
    "for development, run `scripts/build_inplace.sh` and put `python/` on PYTHONPATH."
)

_core: ModuleType | None = None
_error: Exception | None = None


def native_available() -> bool:
    """True when ``miprun._core`` can be imported."""
    try:
        core()
    except ImportError:
        return False
    return True


def core() -> ModuleType:
    """Return the native module, or raise ``ImportError`` saying how to build it."""
    global _core, _error
    if _core is not None:
        return _core
    if _error is None:
        try:
            _core = importlib.import_module("miprun._core")
            return _core
        except ImportError as exc:  # remembered so we do not retry on every call
            _error = exc
    raise ImportError(f"{_BUILD_HINT} (import failed: {_error})") from _error
