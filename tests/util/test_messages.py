"""Warnings print as one line, without Python source."""

from __future__ import annotations

import os
import subprocess
import sys

import miprun

_SCRIPT = """
import warnings
from miprun.util.messages import install_warning_format
install_warning_format()
warnings.warn("windows overlap;\\n  all 4 windows are identical", RuntimeWarning)
"""


def test_warnings_print_one_line_without_source():
    # A fresh interpreter: pytest records warnings itself and would never call the formatter.
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(miprun.__file__))}
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "miprun: warning: windows overlap; all 4 windows are identical\n"
