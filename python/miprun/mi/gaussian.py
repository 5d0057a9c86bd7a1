"""Gaussian MI ``-1/2 log(1 - rho^2)`` from the Pearson correlation: a cheap baseline.

Exact for jointly normal scalar pairs; for other data it is the MI of the Gaussian with
the same second moments, a lower bound of the true MI.
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
    raise ValueError(f"gaussian supports reduction 'pooled' or 'per_dim', got {reduction!r}")
