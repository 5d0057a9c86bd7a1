"""Histogram MI in two steps, for the one-pass score table: bin codes, then MI of code pairs.

Scoring keeps each hidden state as uint8 bin codes (a quarter of a bf16 state's memory)
and computes every run's MI from two code arrays. These functions dispatch by device:
the C++ core for CPU tensors, Triton for CUDA tensors, the float64 reference otherwise.
"""

from __future__ import annotations

import torch

from .binning import bin_codes_ref, edges_ref
from .hist import mi_from_codes_ref


def bin_codes_ref2d(x: torch.Tensor, bins: int, binning: str, per_dim: bool) -> torch.Tensor:
    """Reference codes of ``x: (n, d)`` as uint8 ``(n, d)``: edges over all elements, or per column."""
    if per_dim:
        cols = [bin_codes_ref(x[:, j], edges_ref(x[:, j], bins, binning)) for j in range(x.shape[1])]
        return torch.stack(cols, 1).to(torch.uint8)
    flat = x.reshape(-1)
    return bin_codes_ref(flat, edges_ref(flat, bins, binning)).reshape(x.shape).to(torch.uint8)


def mi_from_codes_ref2d(cx: torch.Tensor, cy: torch.Tensor, bins: int, per_dim: bool, miller_madow: bool) -> float:
    """Reference MI of code arrays ``cx, cy: (n, d)``: pooled over all elements, or mean over columns."""
    if per_dim:
        vals = [mi_from_codes_ref(cx[:, j], cy[:, j], bins, miller_madow) for j in range(cx.shape[1])]
        return float(sum(vals) / len(vals))
    return mi_from_codes_ref(cx.reshape(-1), cy.reshape(-1), bins, miller_madow)


def _backend(t: torch.Tensor, backend: str) -> str:
    if backend != "auto":
        return backend
    if t.device.type == "cuda":
        return "triton"
    from .._native import native_available
    return "native" if native_available() else "reference"


def bin_codes(x: torch.Tensor, *, bins: int, binning: str = "quantile", per_dim: bool = False,
              backend: str = "auto") -> torch.Tensor:
    """Bin codes of ``x: (n, d)`` as uint8 ``(n, d)`` on ``x``'s device."""
    be = _backend(x, backend)
    if be == "native":
        from .cpu import bin_codes_cpu
        return bin_codes_cpu(x, bins=bins, binning=binning, per_dim=per_dim)
    if be == "triton":
        from ..kernels.hist import bin_codes_triton
        return bin_codes_triton(x, bins=bins, binning=binning, per_dim=per_dim)
    return bin_codes_ref2d(x, bins, binning, per_dim).to(x.device)


def mi_from_codes(cx: torch.Tensor, cy: torch.Tensor, *, bins: int, per_dim: bool = False,
                  miller_madow: bool = False, backend: str = "auto") -> float:
    """Plug-in MI in nats of paired code arrays ``cx, cy: (n, d)`` (uint8, values < bins)."""
    be = _backend(cx, backend)
    if be == "native":
        from .cpu import mi_from_codes_cpu
        return mi_from_codes_cpu(cx, cy, bins=bins, per_dim=per_dim, miller_madow=miller_madow)
    if be == "triton":
        from ..kernels.hist import mi_from_codes_triton
        return mi_from_codes_triton(cx, cy, bins=bins, per_dim=per_dim, miller_madow=miller_madow)
    return mi_from_codes_ref2d(cx, cy, bins, per_dim, miller_madow)
