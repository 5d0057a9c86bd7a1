"""Histogram MI in steps, for the one-pass score table: edges, bin codes, joint counts, MI.

Scoring keeps each hidden state as uint8 bin codes (a quarter of a bf16 state's memory),
counts the joint histogram of two code arrays, and turns counts into MI. Counts are sums,
so data-parallel ranks can all-reduce them and get exactly the single-process table.
Each step dispatches by device: the C++ core for CPU tensors, Triton for CUDA tensors,
the float64 reference otherwise (``backend`` overrides).
"""

from __future__ import annotations

import torch

from miprun.mi.backend import resolve_backend
from miprun.mi.cpu import codes_from_edges_cpu, compute_edges_cpu, joint_counts_cpu
from miprun.mi.binning import edges_ref
from miprun.mi.hist import mi_from_joint_counts_ref


# ----------------------------------------------------------------------------- references
def compute_edges_ref(x: torch.Tensor, bins: int, binning: str, per_dim: bool) -> torch.Tensor:
    """Edges of ``x: (n, d)``: float64 ``(bins-1,)`` over all elements, or ``(d, bins-1)`` per column."""
    if per_dim:
        return torch.stack([edges_ref(x[:, j], bins, binning) for j in range(x.shape[1])], 0)
    return edges_ref(x.reshape(-1), bins, binning)


def codes_from_edges_ref(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """uint8 codes ``#{j : edges[j] <= v}`` of ``x: (n, d)``; ``edges`` is ``(bins-1,)`` or ``(d, bins-1)``."""
    xv = x.to(torch.float64)
    e = edges.to(device=x.device, dtype=torch.float64)
    if e.ndim == 1:
        return torch.searchsorted(e.contiguous(), xv.reshape(-1).contiguous(), right=True).reshape(x.shape).to(torch.uint8)
    # per column: searchsorted over rows of edges, values laid out (d, n)
    return torch.searchsorted(e.contiguous(), xv.t().contiguous(), right=True).t().to(torch.uint8)


def joint_counts_ref(cx: torch.Tensor, cy: torch.Tensor, bins: int, per_dim: bool) -> torch.Tensor:
    """int64 joint counts: ``(bins, bins)`` pooled, or ``(d, bins, bins)`` per column."""
    if per_dim:
        d = cx.shape[1]
        col = torch.arange(d, device=cx.device).expand_as(cx).long()
        flat = (col * bins + cx.long()) * bins + cy.long()
        return torch.bincount(flat.reshape(-1), minlength=d * bins * bins).reshape(d, bins, bins)
    flat = cx.long().reshape(-1) * bins + cy.long().reshape(-1)
    return torch.bincount(flat, minlength=bins * bins).reshape(bins, bins)


# ----------------------------------------------------------------------------- dispatch
def compute_edges(x: torch.Tensor, *, bins: int, binning: str = "quantile", per_dim: bool = False,
                  backend: str = "auto") -> torch.Tensor:
    """Bin edges of ``x: (n, d)`` on its device: ``(bins-1,)``, or ``(d, bins-1)`` per column."""
    be = resolve_backend(backend, x.device)
    if be == "native":
        return compute_edges_cpu(x, bins=bins, binning=binning, per_dim=per_dim)
    if be == "triton":
        # on the device, without the float64 copy the reference sorts (16 bytes per element)
        from miprun.kernels.edges import compute_edges_triton  # triton is optional: loaded only when a kernel runs
        return compute_edges_triton(x, bins=bins, binning=binning, per_dim=per_dim)
    return compute_edges_ref(x, bins, binning, per_dim)


def codes_from_edges(x: torch.Tensor, edges: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """uint8 codes of ``x: (n, d)`` against ``edges`` (``(bins-1,)`` or ``(d, bins-1)``)."""
    be = resolve_backend(backend, x.device)
    if be == "native":
        return codes_from_edges_cpu(x, edges)
    if be == "triton":
        from miprun.kernels.hist import codes_from_edges_triton  # triton is optional: loaded only when a kernel runs
        return codes_from_edges_triton(x, edges)
    return codes_from_edges_ref(x, edges)


def joint_counts(cx: torch.Tensor, cy: torch.Tensor, *, bins: int, per_dim: bool = False,
                 backend: str = "auto") -> torch.Tensor:
    """int64 joint histogram of code arrays ``cx, cy: (n, d)``: ``(bins, bins)`` or ``(d, bins, bins)``."""
    be = resolve_backend(backend, cx.device)
    if be == "native":
        return joint_counts_cpu(cx, cy, bins=bins, per_dim=per_dim)
    if be == "triton":
        from miprun.kernels.hist import joint_counts_triton  # triton is optional: loaded only when a kernel runs
        return joint_counts_triton(cx, cy, bins=bins, per_dim=per_dim)
    return joint_counts_ref(cx, cy, bins, per_dim)


def mi_from_counts(counts: torch.Tensor, *, miller_madow: bool = False) -> float:
    """Plug-in MI in nats of joint counts ``(bx, by)``, or the mean over ``(d, bx, by)``; on the counts' device."""
    if counts.ndim == 2:
        return mi_from_joint_counts_ref(counts, miller_madow)
    c = counts.to(torch.float64)
    n = c.sum((1, 2))  # (d,)
    p = c / n[:, None, None]
    px = p.sum(2, keepdim=True)
    py = p.sum(1, keepdim=True)
    denom = px * py
    safe = torch.where(p > 0, p / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.ones_like(p))
    mi = (p * torch.log(safe)).sum((1, 2))
    if miller_madow:
        mx = (px > 0).sum((1, 2))
        my = (py > 0).sum((1, 2))
        mxy = (p > 0).sum((1, 2))
        mi = mi + (mx + my - mxy - 1).to(torch.float64) / (2.0 * n)
    return float(mi.mean())


def bin_codes(x: torch.Tensor, *, bins: int, binning: str = "quantile", per_dim: bool = False,
              backend: str = "auto") -> torch.Tensor:
    """Bin codes of ``x: (n, d)`` as uint8 ``(n, d)`` on ``x``'s device."""
    edges = compute_edges(x, bins=bins, binning=binning, per_dim=per_dim, backend=backend)
    return codes_from_edges(x, edges, backend=backend)
