"""CPU estimators in the native core (``miprun._core``): torch tensors in, floats and tensors out.

The dispatchers in :mod:`miprun.mi` and :mod:`miprun.mi.codes` call these for CPU tensors.
Each function hands the core a NumPy view of its inputs (no copy for contiguous float32 or
float64); float16 and bfloat16 are widened to float32 first, which is exact. The results
equal the float64 ``*_ref`` functions: the same edges and codes, and MI to rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from miprun._native import core

__all__ = ["hist_cpu", "compute_edges_cpu", "codes_from_edges_cpu", "joint_counts_cpu",
           "ksg_points_cpu", "ksg_per_dim_cpu", "gaussian_cpu"]

_KEPT = (torch.float32, torch.float64, torch.uint8)


def _numpy(t: torch.Tensor, name: str) -> np.ndarray:
    """A C-contiguous NumPy view of the CPU tensor ``t`` (float32, float64 or uint8 kept)."""
    if not isinstance(t, torch.Tensor):
        return np.ascontiguousarray(t)
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; the native core runs CPU tensors (move it with .cpu())")
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)  # every half-precision value is a float32 value
    elif t.dtype not in _KEPT:
        t = t.to(torch.float64)
    return t.contiguous().numpy()


def hist_cpu(x: torch.Tensor, y: torch.Tensor, *, bins: int, binning: str, reduction: str,
             miller_madow: bool) -> float:
    """Histogram MI in nats of ``x, y: (n, d)``, as :func:`miprun.mi.hist.hist_ref`.

    Edges, codes and the joint counts are computed in one native call; codes are never
    stored. ``reduction`` is ``"pooled"`` or ``"per_dim"``.
    """
    return float(core().hist_mi(_numpy(x, "x"), _numpy(y, "y"), bins=int(bins), binning=binning,
                                reduction=reduction, miller_madow=bool(miller_madow)))


def compute_edges_cpu(x: torch.Tensor, *, bins: int, binning: str, per_dim: bool) -> torch.Tensor:
    """Bin edges of ``x: (n, d)`` as float64 ``(bins-1,)``, or ``(d, bins-1)`` when ``per_dim``.

    Equal to :func:`miprun.mi.codes.compute_edges_ref`; quantile edges come from selection
    rather than a full sort.
    """
    return torch.from_numpy(core().compute_edges(_numpy(x, "x"), int(bins), binning, bool(per_dim)))


def codes_from_edges_cpu(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """uint8 codes ``#{j : edges[j] <= v}`` of ``x: (n, d)``, shaped like ``x``.

    ``edges`` is ``(bins-1,)`` or ``(d, bins-1)``; equal to
    :func:`miprun.mi.codes.codes_from_edges_ref`.
    """
    e = edges.detach().to("cpu", torch.float64) if isinstance(edges, torch.Tensor) else np.asarray(edges, np.float64)
    codes = torch.from_numpy(core().codes_from_edges(_numpy(x, "x"), _numpy(e, "edges")))
    return codes.reshape(tuple(x.shape))


def joint_counts_cpu(cx: torch.Tensor, cy: torch.Tensor, *, bins: int, per_dim: bool) -> torch.Tensor:
    """int64 joint counts of uint8 codes ``cx, cy: (n, d)``: ``(bins, bins)`` or ``(d, bins, bins)``."""
    for name, c in (("cx", cx), ("cy", cy)):
        if c.dtype != torch.uint8:
            raise ValueError(f"{name} must hold uint8 bin codes, got {c.dtype}")
    a, b = _numpy(cx, "cx"), _numpy(cy, "cy")
    if a.ndim == 1:
        a, b = a[:, None], b[:, None]
    return torch.from_numpy(core().joint_counts(a, b, int(bins), bool(per_dim)))


def ksg_points_cpu(xp: torch.Tensor, yp: torch.Tensor, k: int, *, metric: str = "chebyshev") -> float:
    """Raw KSG-1 value in nats (not clipped) of prepared float64 points ``(m, dx)``, ``(m, dy)``.

    ``metric``: the norm within x and within y, ``"chebyshev"`` or ``"euclidean"``.
    """
    return float(core().ksg_points(_numpy(xp, "x"), _numpy(yp, "y"), int(k), metric=metric))


def ksg_per_dim_cpu(xp: torch.Tensor, yp: torch.Tensor, k: int) -> float:
    """Mean over columns ``j`` of the raw scalar KSG of ``xp[:, j]`` with ``yp[:, j]``, in nats."""
    return float(core().ksg_per_dim(_numpy(xp, "x"), _numpy(yp, "y"), int(k)))


def gaussian_cpu(x: torch.Tensor, y: torch.Tensor, *, reduction: str) -> float:
    """Gaussian MI ``-1/2 log(1 - rho^2)`` in nats of ``x, y: (n, d)``, pooled or per column."""
    return float(core().gaussian_mi(_numpy(x, "x"), _numpy(y, "y"), reduction=reduction))
