"""Compact per-state forms for the one-pass score table, one class per estimator.

Each scorer turns a hidden state ``x: (n_tokens, d)`` into the form the score window keeps
on the state's device (``encode``), computes the local part of a pair's score (``pair``),
and turns the data-parallel sum of those parts into the score (``finish``):

- ``hist``: uint8 bin codes; the pair part is the int64 joint histogram (a sum, so
  data-parallel ranks all-reduce it exactly);
- ``ksg``: the seeded subsample (same element or row indices for every state, so pairs
  align), gathered from all ranks; the pair part is the finished value;
- ``gaussian``: the state with its mean and centred sum of squares; the pair part is the
  centred cross-product sum;
- ``cosine`` / ``angular``: the state with its row norms; the pair part is the sum of row
  cosines, the row count and the sum of row dot products;
- the pooled ``gaussian`` companion (:class:`PooledGaussianCompanion`) reads that same pair
  part: with each state's element sum and sum of squares (its squared row norms), the
  pooled correlation needs only the sum of the row dot products.

Every scorer reproduces :func:`miprun.mutual_information` on the same pair of states.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from miprun.mi import codes
from miprun.mi.gaussian import _mi_from_rho
from miprun.mi.ksg import (DEFAULT_POOLED_SAMPLES, DEFAULT_PROJECTION_SAMPLES, random_projection, standardize_jitter, subsample_rows, ksg_prepared)

# Float64 temporaries of the row-wise scorers are bounded to this many elements (256 MiB).
CHUNK_ELEMENTS = 1 << 25
# Row cosines of several pairs at once (CosineScorer.pairs) go through float64 temporaries of
# this many elements (512 KiB): they stay in cache instead of being allocated afresh.
CACHE_ELEMENTS = 1 << 16
# Above this many candidates, a seeded O(m) sampler replaces torch.randperm (whose int64
# permutation of every element of a large state would not fit in memory); below it the
# sample is exactly the one miprun.mi.ksg.prepare draws.
PERMUTATION_LIMIT = 1 << 25


def global_subset(total: int, m: int | None, seed: int) -> torch.Tensor | None:
    """Sorted seeded sample of ``m`` of ``range(total)`` (CPU int64), or None for all.

    Identical to :func:`miprun.mi.ksg.subsample_rows` up to :data:`PERMUTATION_LIMIT`.
    """
    if m is None or m >= total:
        return None
    if total <= PERMUTATION_LIMIT:
        return subsample_rows(total, m, seed, torch.device("cpu"))
    g = torch.Generator().manual_seed(int(seed))
    picked = torch.empty(0, dtype=torch.long)
    while picked.numel() < m:
        draw = torch.randint(0, total, (2 * (m - picked.numel()) + 16,), generator=g)
        picked = torch.unique(torch.cat([picked, draw]))  # sorted, distinct
    keep = torch.randperm(picked.numel(), generator=g)[:m]
    return picked[keep].sort().values


def local_part(global_idx: torch.Tensor | None, offset: int, count: int, device) -> torch.Tensor | None:
    """The indices of ``global_idx`` in ``[offset, offset + count)``, shifted to start at 0."""
    if global_idx is None:
        return None
    sel = global_idx[(global_idx >= offset) & (global_idx < offset + count)] - offset
    return sel.to(device)


def _row_chunks(n: int, d: int):
    step = max(1, CHUNK_ELEMENTS // max(d, 1))
    for lo in range(0, n, step):
        yield lo, min(lo + step, n)


# ----------------------------------------------------------------------------- hist
class HistScorer:
    """Histogram MI: quantile or uniform edges per state from the edge rows, uint8 codes in the window."""

    reduces = True  # pair parts are sums over tokens: data-parallel ranks add them

    def __init__(self, *, bins: int, binning: str, per_dim: bool, miller_madow: bool,
                 edge_rows: torch.Tensor | None, reducer, backend: str) -> None:
        self.bins, self.binning, self.per_dim, self.miller_madow = bins, binning, per_dim, miller_madow
        self.edge_rows, self.reducer, self.backend = edge_rows, reducer, backend

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        rows = x if self.edge_rows is None else x.index_select(0, self.edge_rows)
        rows = self.reducer.all_gather_rows(rows)
        edges = codes.compute_edges(rows, bins=self.bins, binning=self.binning, per_dim=self.per_dim,
                                    backend=self.backend)
        return codes.codes_from_edges(x, edges, backend=self.backend)  # (n, d) uint8

    def pair(self, ca: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
        return codes.joint_counts(ca, cb, bins=self.bins, per_dim=self.per_dim, backend=self.backend)

    def finish(self, counts: torch.Tensor, ea: Any, eb: Any) -> float:
        return codes.mi_from_counts(counts, miller_madow=self.miller_madow)


# ----------------------------------------------------------------------------- ksg
class KsgScorer:
    """KSG MI: the window keeps each state's seeded subsample (all ranks' rows, in global order)."""

    reduces = False  # every rank holds the gathered subsample and computes the same value

    def __init__(self, *, reduction: str, k: int, seed: int, sample: torch.Tensor | None,
                 projection: torch.Tensor | None, reducer, backend: str) -> None:
        self.reduction, self.k, self.seed = reduction, k, seed
        self.sample, self.projection, self.reducer, self.backend = sample, projection, reducer, backend

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduction == "pooled":
            v = x.reshape(-1)
            v = v if self.sample is None else v.index_select(0, self.sample)
            return self.reducer.all_gather_rows(v[:, None])  # (m, 1)
        rows = x if self.sample is None else x.index_select(0, self.sample)
        rows = self.reducer.all_gather_rows(rows)  # (m, d)
        if self.projection is not None:
            rows = rows.to(torch.float64) @ self.projection  # (m, p)
        return rows

    def pair(self, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
        # the jitter seeds follow miprun.mi.ksg.prepare: seed+1 for x (earlier state), seed+2 for y
        xs = standardize_jitter(sa, self.seed + 1)
        ys = standardize_jitter(sb, self.seed + 2)
        value = ksg_prepared(xs, ys, self.k, per_dim=self.reduction == "per_dim", backend=self.backend)
        return torch.tensor(value, dtype=torch.float64)

    def finish(self, value: torch.Tensor, ea: Any, eb: Any) -> float:
        return float(value)


# ----------------------------------------------------------------------------- gaussian
class GaussianScorer:
    """Gaussian MI ``-1/2 log(1 - rho^2)``; the window keeps states with their means and centred norms."""

    reduces = True  # pair parts are sums over tokens: data-parallel ranks add them

    def __init__(self, *, per_dim: bool, reducer) -> None:
        self.per_dim, self.reducer = per_dim, reducer

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        return t.sum(0) if self.per_dim else t.sum().reshape(1)

    def encode(self, x: torch.Tensor):
        n, d = x.shape
        s = torch.zeros(d if self.per_dim else 1, dtype=torch.float64, device=x.device)
        for lo, hi in _row_chunks(n, d):
            s += self._sum(x[lo:hi].to(torch.float64))
        count = n if self.per_dim else n * d
        tot = self.reducer.all_reduce_sum(torch.cat([s, torch.tensor([float(count)], dtype=torch.float64,
                                                                           device=x.device)]))
        mean = tot[:-1] / tot[-1]
        sxx = torch.zeros_like(s)
        for lo, hi in _row_chunks(n, d):
            c = x[lo:hi].to(torch.float64) - mean
            sxx += self._sum(c * c)
        return x, mean, self.reducer.all_reduce_sum(sxx)

    def pair(self, ea, eb) -> torch.Tensor:
        xa, ma, _ = ea
        xb, mb, _ = eb
        n, d = xa.shape
        sxy = torch.zeros_like(ma)
        for lo, hi in _row_chunks(n, d):
            sxy += self._sum((xa[lo:hi].to(torch.float64) - ma) * (xb[lo:hi].to(torch.float64) - mb))
        return sxy

    def finish(self, sxy: torch.Tensor, ea, eb) -> float:
        sxx, syy = ea[2], eb[2]
        denom = torch.sqrt(sxx * syy)
        rho = torch.where(denom > 0, sxy / torch.where(denom > 0, denom, torch.ones_like(denom)),
                          torch.zeros_like(denom))
        return float(_mi_from_rho(rho).mean())


# ----------------------------------------------------------------------------- cosine, angular
class CosineScorer:
    """ShortGPT's Block Influence ``1 - mean cos`` or Gromov's angular distance ``arccos(mean cos) / pi``."""

    reduces = True  # pair parts are sums over tokens: data-parallel ranks add them

    def __init__(self, *, angular: bool, reducer) -> None:
        self.angular, self.reducer = angular, reducer

    def encode(self, x: torch.Tensor):
        n, d = x.shape
        norms = torch.empty(n, dtype=torch.float64, device=x.device)
        for lo, hi in _row_chunks(n, d):
            norms[lo:hi] = torch.linalg.vector_norm(x[lo:hi].to(torch.float64), dim=1)
        return x, norms

    def pair(self, ea, eb) -> torch.Tensor:
        xa, na = ea[0], ea[1]
        xb, nb = eb[0], eb[1]
        n, d = xa.shape
        total = torch.zeros((), dtype=torch.float64, device=xa.device)
        dots = torch.zeros((), dtype=torch.float64, device=xa.device)
        for lo, hi in _row_chunks(n, d):
            dot = (xa[lo:hi].to(torch.float64) * xb[lo:hi].to(torch.float64)).sum(1)
            denom = na[lo:hi] * nb[lo:hi]
            both_zero = (na[lo:hi] == 0) & (nb[lo:hi] == 0)  # two zero rows count as cosine 1, as cosine_ref
            cos = torch.where(denom > 0, dot / torch.where(denom > 0, denom, torch.ones_like(denom)),
                              both_zero.to(torch.float64))
            total += cos.clamp(-1.0, 1.0).sum()
            dots += dot.sum()
        return torch.stack([total, torch.tensor(float(n), dtype=torch.float64, device=xa.device), dots])

    def pairs(self, earlier: list, eb) -> torch.Tensor:
        """``torch.stack([self.pair(ea, eb) for ea in earlier])``, bit for bit, in one sweep over the rows.

        The later state's rows are converted to float64 once for all earlier states, in
        cache-sized chunks; the row cosines are then summed over the same row ranges as
        :meth:`pair` sums them, so each total is the same float.
        """
        xb, nb = eb[0], eb[1]
        n, d = xb.shape
        rows = [torch.empty(n, dtype=torch.float64, device=xb.device) for _ in earlier]
        dots = [torch.empty(n, dtype=torch.float64, device=xb.device) for _ in earlier]
        step = max(1, CACHE_ELEMENTS // max(d, 1))
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            yb = xb[lo:hi].to(torch.float64)
            for ea, out, out_dot in zip(earlier, rows, dots):
                xa, na = ea[0], ea[1]
                dot = (xa[lo:hi].to(torch.float64) * yb).sum(1)
                denom = na[lo:hi] * nb[lo:hi]
                both_zero = (na[lo:hi] == 0) & (nb[lo:hi] == 0)
                cos = torch.where(denom > 0, dot / torch.where(denom > 0, denom, torch.ones_like(denom)),
                                  both_zero.to(torch.float64))
                out[lo:hi] = cos.clamp(-1.0, 1.0)
                out_dot[lo:hi] = dot
        count = torch.tensor(float(n), dtype=torch.float64, device=xb.device)
        stats = []
        for cos, dot in zip(rows, dots):
            total = torch.zeros((), dtype=torch.float64, device=xb.device)
            dot_total = torch.zeros((), dtype=torch.float64, device=xb.device)
            for lo, hi in _row_chunks(n, d):  # the ranges pair() sums
                total += cos[lo:hi].sum()
                dot_total += dot[lo:hi].sum()
            stats.append(torch.stack([total, count, dot_total]))
        return torch.stack(stats) if stats else torch.zeros((0, 3), dtype=torch.float64, device=xb.device)

    def finish(self, stats: torch.Tensor, ea, eb) -> float:
        mean_cos = float(stats[0] / stats[1])
        if self.angular:
            return math.acos(min(max(mean_cos, -1.0), 1.0)) / math.pi
        return 1.0 - mean_cos


class PooledGaussianCompanion:
    """The pooled Gaussian MI of a pair, from the cosine scorer's pair part (see the module docstring).

    The companion window keeps each state as ``(x, row norms, moments)``, ``moments`` the
    all-reduced float64 ``[element sum, element sum of squares, element count]``
    (:meth:`moments`); :meth:`finish` turns the sum of row dot products into the
    correlation of all ``n * d`` element pairs. It equals the ``gaussian`` estimator's
    pooled table up to float64 rounding (the estimator centres before it multiplies).
    """

    def __init__(self, *, reducer) -> None:
        self.reducer = reducer

    def moments(self, x: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        n, d = x.shape
        s = torch.zeros((), dtype=torch.float64, device=x.device)
        for lo, hi in _row_chunks(n, d):
            s += x[lo:hi].to(torch.float64).sum()
        local = torch.stack([s, (norms * norms).sum(), torch.tensor(float(n * d), dtype=torch.float64,
                                                                     device=x.device)])
        return self.reducer.all_reduce_sum(local)

    def finish(self, stats: torch.Tensor, ea, eb) -> float:
        (sa, qa, count), (sb, qb, _) = (float(v) for v in ea[2]), (float(v) for v in eb[2])
        ma, mb = sa / count, sb / count
        sxy = float(stats[2]) - count * ma * mb
        sxx, syy = qa - count * ma * ma, qb - count * mb * mb
        denom = math.sqrt(max(sxx, 0.0) * max(syy, 0.0))
        rho = sxy / denom if denom > 0 else 0.0
        return float(_mi_from_rho(torch.tensor(rho, dtype=torch.float64)))


def make_scorer(estimator: str, *, reduction: str, n_local: int, d: int, total: int, token_offset: int,
                device: torch.device, bins: int | None, binning: str, k: int, bias_correction,
                max_samples: int | None, seed: int, edge_tokens: int, projection_dim: int, reducer,
                backend: str):
    """The scorer for ``estimator``, with its seeded row/element selections for this process's tokens."""
    if estimator == "hist":
        edge_idx = global_subset(total, edge_tokens, seed)
        return HistScorer(bins=bins, binning=binning, per_dim=reduction == "per_dim",
                          miller_madow=bias_correction == "miller_madow",
                          edge_rows=local_part(edge_idx, token_offset, n_local, device),
                          reducer=reducer, backend=backend)
    if estimator == "ksg":
        if reduction == "pooled":
            m = max_samples if max_samples is not None else DEFAULT_POOLED_SAMPLES
            idx = local_part(global_subset(total * d, m, seed), token_offset * d, n_local * d, device)
        else:
            m = max_samples if max_samples is not None or reduction == "per_dim" else DEFAULT_PROJECTION_SAMPLES
            idx = local_part(global_subset(total, m, seed), token_offset, n_local, device)
        proj = random_projection(d, projection_dim, seed, device) if reduction == "projection" else None
        return KsgScorer(reduction=reduction, k=k, seed=seed, sample=idx, projection=proj,
                         reducer=reducer, backend=backend)
    if estimator == "gaussian":
        return GaussianScorer(per_dim=reduction == "per_dim", reducer=reducer)
    return CosineScorer(angular=estimator == "angular", reducer=reducer)
