"""Fold a healing map into the weights of the block before a cut, in the family's own layout."""

from __future__ import annotations

import operator

import torch
from torch import nn

from miprun.models.families import HealSite

__all__ = ["fold_map"]


def _param(block: nn.Module, path: str | None) -> torch.Tensor | None:
    if path is None:
        return None
    try:
        return operator.attrgetter(path)(block)
    except AttributeError:
        return None


def fold_map(block: nn.Module, site: HealSite, T: torch.Tensor) -> None:
    """Make ``block``'s MLP output ``m T`` instead of ``m``, by changing its weights in place.

    ``T``: float64, ``(d, d)`` for a full map or ``(d,)`` for channel factors. The product
    is formed in float64 and cast back once to each weight's dtype.
    """
    weight = _param(block, site.weight)
    if weight is None:
        raise ValueError(f"the block has no parameter {site.weight!r} to fold the heal into")
    bias = _param(block, site.bias)
    if T.ndim == 1:
        if site.kind == "norm_plus_one":
            _assign(weight, (1.0 + weight.detach().double()) * T.to(weight.device) - 1.0)
            return
        T = torch.diag(T)
    elif site.kind == "norm_plus_one":
        raise ValueError("a norm after the MLP takes channel factors only, not a full map")
    T = T.to(weight.device)
    W = weight.detach().double()
    if site.kind == "linear":  # y = x W^T + b  ->  y T = x (T^T W)^T + T^T b
        _assign(weight, T.T @ W)
    elif site.kind == "conv1d":  # y = x W + b  ->  y T = x (W T) + b T
        _assign(weight, W @ T)
    elif site.kind == "experts":  # every expert (E, d, d_ff) like a linear layer
        _assign(weight, torch.einsum("ij,eik->ejk", T, W))
    else:
        raise ValueError(f"unknown fold kind {site.kind!r}")
    if bias is not None:
        _assign(bias, bias.detach().double() @ T)


def _assign(param: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.to(param.dtype))

