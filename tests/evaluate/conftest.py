"""Run this folder's tests on one CPU thread.

The models here are tiny: a matrix product takes microseconds, and on a busy machine the
thread pool's hand-offs cost far more than the work (a 256-token forward of a 260K-parameter
model went from 0.05 s to 2 s with two threads under load).
"""

from __future__ import annotations

import pytest
from support import torch_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield
