"""Binning for the histogram estimator: bin-count rules, edges and bin codes (reference).

A value ``v`` gets the code ``#{j : edges[j] <= v}`` in ``0..bins-1`` (``searchsorted``
with ``right=True``). Quantile edges are order statistics of the data, so ties fall into
one bin and a constant variable has a single occupied bin (its MI is 0).
"""

from __future__ import annotations

import math

import torch

from miprun.kernels import MAX_BINS  # codes fit in uint8, which keeps the score window compact

BIN_RULES = ("auto", "sqrt", "sturges", "rice")


def resolve_bins(bins, n: int) -> int:
    """Number of bins per variable for ``n`` samples.

    ``bins`` is an int in ``2..256`` or a rule: ``"rice"`` ``ceil(2 n^(1/3))``,
    ``"sturges"`` ``ceil(log2 n) + 1``, ``"sqrt"`` ``ceil(sqrt(n))``, and ``"auto"``
    ``ceil(n^(1/3))`` (a joint histogram of ``bins**2`` cells then holds about ``n^(1/3)``
    samples per cell, which keeps the plug-in bias small). Rules are clamped to ``2..256``.
    """
    if isinstance(bins, bool):
        raise ValueError(f"bins must be an int in 2..{MAX_BINS} or one of {BIN_RULES}, got {bins!r}")
    if isinstance(bins, int):
        if not 2 <= bins <= MAX_BINS:
            raise ValueError(f"bins must be between 2 and {MAX_BINS}, got {bins}")
        return bins
    if bins == "auto":
        b = math.ceil(n ** (1.0 / 3.0))
    elif bins == "rice":
        b = math.ceil(2.0 * n ** (1.0 / 3.0))
    elif bins == "sturges":
        b = math.ceil(math.log2(max(n, 1))) + 1
    elif bins == "sqrt":
        b = math.ceil(math.sqrt(n))
    else:
        raise ValueError(f"bins must be an int in 2..{MAX_BINS} or one of {BIN_RULES}, got {bins!r}")
    return int(min(max(b, 2), MAX_BINS))


def quantile_edges_ref(v: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-frequency edges of ``v: (N,)``: ``sorted(v)[floor(j N / bins)]``, ``j = 1..bins-1``."""
    n = v.shape[0]
    s = torch.sort(v.to(torch.float64)).values
    idx = (torch.arange(1, bins, dtype=torch.float64) * n / bins).floor().long().clamp_(0, n - 1)
    return s[idx.to(s.device)]


def uniform_edges_ref(v: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-width edges over ``[min v, max v]``: ``min + (max - min) j / bins``, ``j = 1..bins-1``."""
    v = v.to(torch.float64)
    lo, hi = v.min(), v.max()
    j = torch.arange(1, bins, dtype=torch.float64, device=v.device)
    return lo + (hi - lo) * j / bins


def edges_ref(v: torch.Tensor, bins: int, binning: str) -> torch.Tensor:
    if binning == "quantile":
        return quantile_edges_ref(v, bins)
    if binning == "uniform":
        return uniform_edges_ref(v, bins)
    raise ValueError(f"binning must be 'quantile' or 'uniform', got {binning!r}")


def bin_codes_ref(v: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Codes ``#{j : edges[j] <= v}`` of ``v: (N,)`` as int64 in ``0..len(edges)``."""
    return torch.searchsorted(edges.to(torch.float64).contiguous(), v.to(torch.float64).contiguous(), right=True)
