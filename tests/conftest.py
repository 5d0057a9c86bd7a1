"""Test setup that must run before anything else is imported."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels run in its interpreter; this must be set before any
# kernel module is imported, so it lives at the top of the root conftest.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Skip the tests whose needs (markers) are not met; fail those needing the native core
    when MIPRUN_REQUIRE_NATIVE=1 says it must be there."""
    if item.get_closest_marker("requires_native") is not None:
        from support import NATIVE_ERROR, REQUIRE_NATIVE
        if NATIVE_ERROR is not None:
            if REQUIRE_NATIVE:
                pytest.fail(f"MIPRUN_REQUIRE_NATIVE=1 but the native core cannot be used: "
                            f"{type(NATIVE_ERROR).__name__}: {NATIVE_ERROR}", pytrace=False)
            pytest.skip(f"miprun._core is not usable: {NATIVE_ERROR}")
    if item.get_closest_marker("requires_cuda") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    for mark in item.iter_markers("requires_data"):
        for path in mark.args:
            if not Path(path).exists():
                pytest.skip(f"{path} not found (MIPRUN_DATA names the shared data folder)")
