"""Baselines that are not MI: ShortGPT's Block Influence and Gromov et al.'s angular distance.

Both compare ``x_t`` with ``y_t`` token by token (rows of ``(n, d)`` inputs), so the
``reduction`` argument does not apply to them.

References
----------
Men et al. (2024). ShortGPT: Layers in large language models are more redundant than you expect.
Gromov et al. (2024). The unreasonable ineffectiveness of the deeper layers.
"""

from __future__ import annotations

import math

import torch


def mean_row_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over rows of ``cos(x_t, y_t)`` in float64; a zero row counts as cosine 1 with a zero row, else 0."""
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    nx = torch.linalg.vector_norm(x, dim=1)
    ny = torch.linalg.vector_norm(y, dim=1)
    dot = (x * y).sum(1)
    denom = nx * ny
    both_zero = (nx == 0) & (ny == 0)
    cos = torch.where(denom > 0, dot / torch.where(denom > 0, denom, torch.ones_like(denom)),
                      both_zero.to(torch.float64))
    return float(cos.clamp(-1.0, 1.0).mean())


def cosine_ref(x: torch.Tensor, y: torch.Tensor) -> float:
    """Block Influence ``1 - mean_t cos(x_t, y_t)``, in ``[0, 2]``; higher means more important."""
    return 1.0 - mean_row_cosine(x, y)


def angular_ref(x: torch.Tensor, y: torch.Tensor) -> float:
    """Angular distance ``arccos(mean_t cos(x_t, y_t)) / pi``, in ``[0, 1]``; higher means more important."""
    c = min(max(mean_row_cosine(x, y), -1.0), 1.0)
    return math.acos(c) / math.pi
