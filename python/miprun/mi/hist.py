"""Histogram (plug-in) mutual information.

``I = sum_ab p_ab log(p_ab / (p_a p_b))`` in nats over the joint histogram of the bin
codes of ``x`` and ``y``; with ``bias_correction="miller_madow"`` each entropy gets
``(m - 1) / (2 N)`` (``m`` occupied bins), i.e. ``I += (m_x + m_y - m_xy - 1) / (2 N)``.

References
----------
Miller, G. (1955). Note on the bias of information estimates.
Paninski, L. (2003). Estimation of entropy and mutual information. Neural Computation.
"""

from __future__ import annotations

import torch

from miprun.mi.binning import bin_codes_ref, edges_ref

BIAS_CORRECTIONS = (None, "miller_madow")


def mi_from_joint_counts_ref(joint: torch.Tensor, miller_madow: bool = False) -> float:
    """Plug-in MI in nats of a joint count table ``joint: (bx, by)`` (float64 arithmetic)."""
    j = joint.to(torch.float64)
    n = j.sum()
    if n <= 0:
        raise ValueError("empty joint histogram")
    px = j.sum(1) / n
    py = j.sum(0) / n
    p = j / n
    nz = p > 0
    ratio = p[nz] / (px[:, None] * py[None, :])[nz]
    mi = float((p[nz] * torch.log(ratio)).sum())
    if miller_madow:
        mx = int((px > 0).sum())
        my = int((py > 0).sum())
        mxy = int(nz.sum())
        mi += (mx + my - mxy - 1) / (2.0 * float(n))
    return mi


def mi_from_codes_ref(cx: torch.Tensor, cy: torch.Tensor, bins: int, miller_madow: bool = False) -> float:
    """Plug-in MI of paired integer codes ``cx, cy: (N,)`` in ``0..bins-1``."""
    joint = torch.bincount((cx.long() * bins + cy.long()).cpu(), minlength=bins * bins).reshape(bins, bins)
    return mi_from_joint_counts_ref(joint, miller_madow)


def _pair_mi_ref(x: torch.Tensor, y: torch.Tensor, bins: int, binning: str, miller_madow: bool) -> float:
    # x, y: (N,) scalar samples
    cx = bin_codes_ref(x, edges_ref(x, bins, binning))
    cy = bin_codes_ref(y, edges_ref(y, bins, binning))
    return mi_from_codes_ref(cx, cy, bins, miller_madow)


def hist_ref(x: torch.Tensor, y: torch.Tensor, *, bins: int, binning: str = "quantile",
             reduction: str = "pooled", bias_correction=None) -> float:
    """Reference histogram MI, the specification the fast paths are held to.

    ``x, y``: ``(n, d)`` tensors. ``reduction="pooled"`` treats all ``n*d`` elements as
    samples of one scalar pair; ``"per_dim"`` averages the MI of column ``j`` of ``x``
    with column ``j`` of ``y``. ``bins`` is already resolved to an int.
    """
    mm = bias_correction == "miller_madow"
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    if reduction == "pooled":
        return _pair_mi_ref(x.reshape(-1), y.reshape(-1), bins, binning, mm)
    if reduction == "per_dim":
        vals = [_pair_mi_ref(x[:, j], y[:, j], bins, binning, mm) for j in range(x.shape[1])]
        return float(sum(vals) / len(vals))
    raise ValueError(f"hist supports reduction 'pooled' or 'per_dim', got {reduction!r}")
