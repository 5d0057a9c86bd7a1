"""Run this folder's tests on one CPU thread.

The models here are tiny: a matrix product takes microseconds, and on a busy machine the
thread pool's hand-offs cost far more than the work (a 256-token forward of a 260K-parameter
model went from 0.05 s to 2 s with two threads under load).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
