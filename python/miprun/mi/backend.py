"""Which implementation runs an estimator step: the one backend resolver every caller uses.

``auto`` picks Triton for CUDA tensors, the native C++ core for CPU tensors when it is
built, and the float64 reference otherwise (MPS and other devices included: the native
core reads host memory only, so it is never handed a tensor from another device).
"""

from __future__ import annotations

import os
import warnings

import torch

from miprun._native import native_available

__all__ = ["BACKENDS", "resolve_backend"]

BACKENDS = ("auto", "reference", "native", "triton")

_warned_fallback = False


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that runs data on ``device``: ``backend`` itself when not ``auto`` (checked), else by device."""
    global _warned_fallback
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend != "auto":
        if backend == "triton" and device.type != "cuda" and not _triton_interpreted():
            raise ValueError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU testing)")
        if backend == "native" and device.type != "cpu":
            raise ValueError(f"backend='native' runs CPU data; got tensors on {device}. Use backend='triton' or move them.")
        return backend
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu" and native_available():
        return "native"
    if device.type == "cpu" and not _warned_fallback:
        warnings.warn("miprun's native core is not built; using the slow float64 reference estimators. "
                      "Build it with `pip install .` to get the fast CPU path.", RuntimeWarning, stacklevel=3)
        _warned_fallback = True
    return "reference"
