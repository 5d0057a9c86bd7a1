"""Test setup that must run before anything else is imported."""

from __future__ import annotations

import os

import torch

# Without a GPU, Triton kernels run in its interpreter; this must be set before any
# kernel module is imported, so it lives at the top of the root conftest.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
