"""Least-squares statistics of one cut, accumulated in float64, and the map they give.

A cut removes the run ``s .. s+L-1`` after the kept block ``p = s - 1``. Block ``p``
outputs ``a + m`` (its residual stream ``a`` and its MLP output ``m``); the unpruned model
has ``y = h_{s+L}`` there. Healing replaces ``m`` by ``m T``, with ``T`` minimising
``sum_t w_t ||m_t T - r_t||^2 + lam ||T - I||^2`` over calibration tokens, ``r = y - a``, with
token weights ``w_t`` (1, or ``1 / ||y_t||^2`` for the ``relative`` objective) and
``lam = ridge * mean diag G``. Everything the
solution and its residual need is a sum over tokens: ``G = M^T M``, ``C = M^T R`` and
``||R||^2`` (for ``scale`` only their diagonals), so processes sum them with one
all-reduce and get the one-process map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["CutStats", "solve", "relative_residual"]


@dataclass
class CutStats:
    """Sums over tokens for one cut: ``G = M^T M``, ``C = M^T R``, ``rr = ||R||^2``, ``tokens``.

    With ``full=False`` only the diagonals ``sum m_j^2`` and ``sum m_j r_j`` are kept (a
    per-channel scale needs no more).
    """

    d: int
    full: bool
    device: torch.device
    G: torch.Tensor = field(init=False)
    C: torch.Tensor = field(init=False)
    rr: torch.Tensor = field(init=False)
    tokens: int = 0

    def __post_init__(self) -> None:
        shape = (self.d, self.d) if self.full else (self.d,)
        self.G = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.C = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.rr = torch.zeros((), dtype=torch.float64, device=self.device)

    def add(self, m: torch.Tensor, r: torch.Tensor, w: torch.Tensor | None = None) -> None:
        """Add tokens: ``m`` and ``r`` of shape (..., d), on the stats' device; ``w`` (...,) weights per token."""
        m = m.reshape(-1, self.d).to(torch.float64)
        r = r.reshape(-1, self.d).to(torch.float64)
        mw = m if w is None else m * w.reshape(-1, 1).to(torch.float64)
        if self.full:
            self.G += mw.T @ m
            self.C += mw.T @ r
        else:
            self.G += (mw * m).sum(0)
            self.C += (mw * r).sum(0)
        self.rr += (r * r).sum() if w is None else (w.reshape(-1).to(torch.float64) * (r * r).sum(1)).sum()
        self.tokens += m.shape[0]

    def reduce(self, reducer) -> None:
        """Sum over data-parallel processes (``reducer.all_reduce_sum``); every process gets the total."""
        if reducer is None:
            return
        packed = torch.cat([self.G.reshape(-1), self.C.reshape(-1), self.rr.reshape(1),
                            torch.tensor([float(self.tokens)], dtype=torch.float64, device=self.device)])
        packed = reducer.all_reduce_sum(packed)
        n = self.G.numel()
        self.G = packed[:n].reshape(self.G.shape)
        self.C = packed[n:2 * n].reshape(self.C.shape)
        self.rr = packed[2 * n]
        self.tokens = int(round(float(packed[2 * n + 1])))


def solve(stats: CutStats, ridge: float) -> torch.Tensor:
    """The map, shrunk towards the identity (the unhealed cut): ``(G + lam I)^-1 (C + lam I)``, or per
    channel ``(C + lam) / (G + lam)``; ``lam = ridge * mean diag G``.

    The identity, not zero, is the prior: a channel the calibration tokens say little about
    keeps the block's own output instead of being damped. Returns a float64 ``(d, d)``
    matrix (full) or ``(d,)`` vector of channel factors.
    """
    diag = stats.G.diagonal() if stats.full else stats.G
    lam = ridge * float(diag.mean()) if stats.tokens else 0.0
    if not stats.full:
        safe = stats.G + lam
        # a channel the MLP never writes to (all zeros) keeps factor 1: nothing to fit
        return torch.where(safe > 0, (stats.C + lam) / torch.where(safe > 0, safe, 1.0), torch.ones_like(safe))
    eye = torch.eye(stats.d, dtype=torch.float64, device=stats.device)
    A = stats.G + lam * eye
    try:
        return torch.linalg.solve(A, stats.C + lam * eye)
    except RuntimeError:  # singular without ridge (a rank-deficient MLP output): the least-norm solution
        return torch.linalg.lstsq(A, stats.C + lam * eye).solution


def relative_residual(stats: CutStats, T: torch.Tensor | None) -> float | None:
    """``||M T - R||^2 / ||R||^2`` on the stats' tokens, each token with its weight (``T`` None: ``T = I``).

    Not finite (a map with NaN or inf) gives ``inf``.
    """
    if stats.tokens == 0 or float(stats.rr) == 0.0:
        return None
    if stats.full:
        if T is None:
            err = stats.G.trace() - 2 * stats.C.trace() + stats.rr
        else:
            err = (T * (stats.G @ T)).sum() - 2 * (T * stats.C).sum() + stats.rr
    else:
        t = torch.ones_like(stats.G) if T is None else T
        err = (t * t * stats.G).sum() - 2 * (t * stats.C).sum() + stats.rr
    value = float(err / stats.rr)
    return max(value, 0.0) if math.isfinite(value) else math.inf
