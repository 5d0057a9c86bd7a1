"""Capability markers and data paths shared by the tests (import as `from support import ...`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MIPRUN_DATA", REPO.parent / "shared" / "data"))
STORIES = DATA / "models" / "stories260K-hf"


def _native() -> bool:
    from miprun._native import native_available
    return native_available()


def _triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
requires_native = pytest.mark.skipif(not _native(), reason="miprun._core is not built (pip install .)")
requires_triton = pytest.mark.skipif(not _triton(), reason="triton is not installed")
requires_stories = pytest.mark.skipif(not (STORIES / "config.json").exists(),
                                      reason=f"stories260K model not found at {STORIES}")


def data_file(rel: str) -> Path:
    """Path of a file under the shared data folder; skips the test with the reason if absent."""
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"data file {p} not found (set MIPRUN_DATA to the shared data folder)")
    return p
