"""Histogram MI of two random vectors: the plug-in MI of a joint histogram over all their columns.

Each column of ``x: (n, dx)`` and ``y: (n, dy)`` is binned on its own (quantile or uniform
edges, ``b`` bins); a row of ``x`` falls in one of ``b^dx`` cells, a row of ``y`` in one of
``b^dy``, and ``I = sum p_xy log(p_xy / (p_x p_y))`` over the occupied cells (Miller-Madow:
``+ (m_x + m_y - m_xy - 1) / (2 n)`` with ``m`` the occupied cells).

Only where ``dx + dy`` is small: the joint histogram has ``b^(dx+dy)`` cells, and once
that is far beyond ``n`` most cells hold one sample or none and the plug-in value measures
the sample size rather than the dependence (it tends to ``log n``). ``bins`` rules give
``b`` so that the joint histogram has about as many cells as the rule gives a scalar pair.
"""

from __future__ import annotations

import math

import torch

from miprun.kernels import MAX_BINS
from miprun.mi.binning import resolve_bins
from miprun.mi.codes import codes_from_edges, codes_from_edges_ref, compute_edges, compute_edges_ref

__all__ = ["JOINT_HIST_MAX_DIMS", "check_joint_hist", "joint_bins", "mi_from_cells", "hist_joint", "hist_joint_ref"]

#: Most columns (dx + dy) a joint histogram takes: at 5 bins a column, 4 columns make 625
#: cells, filled by a few thousand samples; 6 columns would make 15625.
JOINT_HIST_MAX_DIMS = 4


def check_joint_hist(dx: int, dy: int) -> None:
    """Raise ValueError unless a joint histogram of ``dx + dy`` columns is meaningful."""
    if dx + dy > JOINT_HIST_MAX_DIMS:
        raise ValueError(
            f"estimator='hist' with reduction='joint' takes dx + dy <= {JOINT_HIST_MAX_DIMS} columns, got "
            f"{dx} + {dy}: a joint histogram of {dx + dy} columns with b bins each has b^{dx + dy} cells, "
            f"mostly empty at any practical sample size, and then the plug-in MI measures the sample size, "
            f"not the dependence; use estimator='ksg' or 'gaussian' with reduction='joint'")


def joint_bins(bins, n: int, dims: int) -> int:
    """Bins per column for a joint histogram of ``dims`` columns and ``n`` samples.

    An int is used as it is (2..256). A rule (``auto``, ``sqrt``, ...) gives ``B`` bins to
    each variable of a scalar pair (:func:`miprun.mi.binning.resolve_bins`), ``B^2`` cells;
    each of ``dims`` columns then gets ``ceil(B^(2 / dims))`` bins, about the same cells.
    """
    if isinstance(bins, int) and not isinstance(bins, bool):
        return resolve_bins(bins, n)
    pair = resolve_bins(bins, n)
    return int(min(max(math.ceil(pair ** (2.0 / dims) - 1e-9), 2), MAX_BINS))


def _cells(codes: torch.Tensor, bins: int) -> torch.Tensor:
    """Cell index of each row of uint8 codes ``(n, d)``: ``sum_t codes[:, t] * bins^t`` (int64)."""
    weights = bins ** torch.arange(codes.shape[1], device=codes.device, dtype=torch.int64)
    return (codes.long() * weights).sum(1)


def mi_from_cells(cell_x: torch.Tensor, cell_y: torch.Tensor, *, miller_madow: bool = False) -> float:
    """Plug-in MI in nats of paired cell labels ``cell_x, cell_y: (n,)`` (any integers), float64.

    Only occupied cells are formed, so the cost is O(n log n) whatever the number of cells.
    """
    n = cell_x.shape[0]
    _, ix, count_x = torch.unique(cell_x, return_inverse=True, return_counts=True)
    _, iy, count_y = torch.unique(cell_y, return_inverse=True, return_counts=True)
    ny = count_y.numel()
    pair, count_xy = torch.unique(ix * ny + iy, return_counts=True)
    cxy = count_xy.to(torch.float64)
    ratio = cxy * n / (count_x[pair // ny].to(torch.float64) * count_y[pair % ny].to(torch.float64))
    mi = float((cxy * torch.log(ratio)).sum() / n)
    if miller_madow:
        mi += (count_x.numel() + ny - count_xy.numel() - 1) / (2.0 * n)
    return mi


def _mi_from_codes(cx: torch.Tensor, cy: torch.Tensor, bins: int, miller_madow: bool) -> float:
    return mi_from_cells(_cells(cx, bins), _cells(cy, bins), miller_madow=miller_madow)


def hist_joint_ref(x: torch.Tensor, y: torch.Tensor, *, bins: int, binning: str = "quantile",
                   bias_correction=None) -> float:
    """Reference joint histogram MI in nats of ``x: (n, dx)``, ``y: (n, dy)``; ``bins`` per column, resolved."""
    check_joint_hist(x.shape[1], y.shape[1])
    z = torch.cat([x, y], 1).to(torch.float64)
    codes = codes_from_edges_ref(z, compute_edges_ref(z, bins, binning, per_dim=True))
    dx = x.shape[1]
    return _mi_from_codes(codes[:, :dx], codes[:, dx:], bins, bias_correction == "miller_madow")


def hist_joint(x: torch.Tensor, y: torch.Tensor, *, bins: int, binning: str = "quantile",
               miller_madow: bool = False, backend: str = "auto") -> float:
    """Joint histogram MI in nats, as :func:`hist_joint_ref`; edges and codes on ``backend``, cells in torch."""
    check_joint_hist(x.shape[1], y.shape[1])
    z = torch.cat([x, y], 1)
    codes = codes_from_edges(z, compute_edges(z, bins=bins, binning=binning, per_dim=True, backend=backend),
                             backend=backend)
    dx = x.shape[1]
    return _mi_from_codes(codes[:, :dx], codes[:, dx:], bins, miller_madow)
