"""Gaussian MI ``-1/2 log(1 - rho^2)`` from the Pearson correlation: a cheap baseline.

Exact for jointly normal scalar pairs; for other data it is the MI of the Gaussian with
the same second moments, a lower bound of the true MI. ``reduction="joint"`` is the
multivariate form, ``1/2 (log det Sx + log det Sy - log det S)`` of the covariances of
``x``, of ``y`` and of both together.
"""

from __future__ import annotations

import torch

# rho^2 is capped below 1 so identical inputs give a large finite value, not inf
_MAX_RHO2 = 1.0 - 1e-12


def _mi_from_rho(rho: torch.Tensor) -> torch.Tensor:
    r2 = (rho * rho).clamp(max=_MAX_RHO2)
    return -0.5 * torch.log1p(-r2)


def pearson_columns(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correlation of column ``j`` of ``x`` with column ``j`` of ``y``, float64; 0 for a constant column."""
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    xc = x - x.mean(0, keepdim=True)
    yc = y - y.mean(0, keepdim=True)
    sxy = (xc * yc).sum(0)
    sxx = (xc * xc).sum(0)
    syy = (yc * yc).sum(0)
    denom = torch.sqrt(sxx * syy)
    return torch.where(denom > 0, sxy / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(denom))


def gaussian_ref(x: torch.Tensor, y: torch.Tensor, *, reduction: str = "pooled") -> float:
    """Gaussian MI in nats of ``x, y: (n, d)``, pooled over all elements or averaged per column."""
    if reduction == "pooled":
        rho = pearson_columns(x.reshape(-1, 1), y.reshape(-1, 1))
        return float(_mi_from_rho(rho)[0])
    if reduction == "per_dim":
        return float(_mi_from_rho(pearson_columns(x, y)).mean())
    if reduction == "joint":
        return gaussian_joint(x, y)
    raise ValueError(f"gaussian supports reduction 'pooled', 'per_dim' or 'joint', got {reduction!r}")


# smallest eigenvalue of a correlation matrix (eigenvalues sum to its size) taken as nonzero:
# below it the log-determinant is dominated by rounding, not by the data
_SINGULAR = 1e-10


def _log_det_correlation(c: torch.Tensor, what: str, hint: str) -> torch.Tensor:
    """log det of the correlation matrix ``c: (d, d)``, or ValueError when it is singular."""
    eig = torch.linalg.eigvalsh(c)
    if float(eig[0]) < _SINGULAR:
        raise ValueError(f"the covariance of {what} is singular (smallest eigenvalue {float(eig[0]):.1e} of its "
                         f"correlation matrix), so its log-determinant is undefined: {hint}")
    return torch.log(eig).sum()


def gaussian_joint(x: torch.Tensor, y: torch.Tensor) -> float:
    """Gaussian MI in nats of ``x: (n, dx)`` and ``y: (n, dy)`` as random vectors.

    ``1/2 (log det Sx + log det Sy - log det S)`` with ``S`` the covariance of the
    ``dx + dy`` columns together, computed from correlation matrices (the scales cancel)
    in float64 on the data's device; O(n (dx + dy)^2). It is the sum of
    ``-1/2 log(1 - rho_i^2)`` over the canonical correlations ``rho_i``. Raises
    ValueError when a covariance is singular: a constant column, a column that is a
    linear combination of others, ``n <= dx + dy``, or ``y`` an exact linear function of
    ``x`` (infinite Gaussian MI).
    """
    n, dx = x.shape
    dy = y.shape[1]
    if n <= dx + dy:
        raise ValueError(f"the joint Gaussian MI needs more samples than dimensions: n={n} samples, "
                         f"dx + dy = {dx + dy}; every covariance of fewer samples is singular")
    z = torch.cat([x, y], 1).to(torch.float64)
    z = z - z.mean(0, keepdim=True)
    std = torch.sqrt((z * z).mean(0))
    for name, cols in (("x", std[:dx]), ("y", std[dx:])):
        flat = torch.nonzero(cols == 0).flatten()
        if flat.numel():
            raise ValueError(f"column {int(flat[0])} of {name} is constant: its variance is 0, so the covariance "
                             f"of {name} is singular; drop constant columns")
    z = z / std
    corr = z.T @ z / n  # (dx + dy, dx + dy)
    drop = "a column is (nearly) a linear combination of the others; drop it"
    log_det_x = _log_det_correlation(corr[:dx, :dx], "x", drop)
    log_det_y = _log_det_correlation(corr[dx:, dx:], "y", drop)
    log_det = _log_det_correlation(corr, "(x, y) together",
                                   "some combination of y's columns is (nearly) a linear function of x's, "
                                   "so the Gaussian MI is infinite")
    return float(0.5 * (log_det_x + log_det_y - log_det))
