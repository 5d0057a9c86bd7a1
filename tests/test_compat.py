"""The 0.1 names still work for one release, with a DeprecationWarning where one can be given."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from miprun._compat import MOVED


def test_old_module_names_warn_and_point_to_the_new_ones():
    olds = ["miprun.score", "miprun.surgery", "miprun.calibrate"]
    # a new interpreter: nothing imported yet, DeprecationWarnings as errors
    code = ("import warnings, miprun\nwarnings.simplefilter('error', DeprecationWarning)\n"
            f"for old in {olds!r}:\n"
            "    try:\n        __import__(old)\n    except DeprecationWarning as w:\n        print('warned', w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    lines = out.splitlines()
    assert len(lines) == 3, out
    for old, line in zip(olds, lines):
        assert line.startswith(f"warned {old} is now {MOVED[old]}"), line
    for old in olds:
        with pytest.warns(DeprecationWarning):
            sys.modules.pop(old, None)
            module = importlib.import_module(old)
        assert module is importlib.import_module(MOVED[old])


def test_old_names_that_are_also_functions_stay_functions():
    import miprun.prune  # noqa: F401  (the 0.1 module name)
    import miprun.select  # noqa: F401
    from miprun.prune import PruneResult
    from miprun.select import SELECTORS
    assert callable(miprun.prune) and callable(miprun.select)
    assert PruneResult is miprun.PruneResult and "fast_block_select" in SELECTORS


def test_every_moved_module_exists():
    for old, new in MOVED.items():
        assert importlib.import_module(new).__name__ == new, old


def test_num_blocks_keyword_is_deprecated_but_works():
    from miprun.pipeline.options import PruneOptions
    with pytest.warns(DeprecationWarning, match="num_remove"):
        old = PruneOptions.from_flat(num_blocks=3)
    assert old == PruneOptions.from_flat(num_remove=3)
