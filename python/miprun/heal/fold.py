"""Fold a healing map into the weights of the block before a cut, in the family's own layout."""

from __future__ import annotations

import operator

import torch
from torch import nn

from miprun.models.families import HealSite

__all__ = ["fold_map", "folded", "fold_tensor"]


def _param(block: nn.Module, path: str | None) -> torch.Tensor | None:
    if path is None:
        return None
    try:
        return operator.attrgetter(path)(block)
    except AttributeError:
        return None


def fold_map(block: nn.Module, site: HealSite, T: torch.Tensor) -> None:
    """Make ``block``'s MLP output ``m T`` instead of ``m``, by changing its weights in place."""
    weight = _param(block, site.weight)
    if weight is None:
        raise ValueError(f"the block has no parameter {site.weight!r} to fold the heal into")
    bias = _param(block, site.bias)
    new_weight, new_bias = folded(site, weight, bias, T)
    _assign(weight, new_weight)
    if bias is not None:
        _assign(bias, new_bias)


def folded(site: HealSite, weight: torch.Tensor, bias: torch.Tensor | None,
           T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight (and bias) that make the module's output ``m T``, in float64.

    ``T``: float64, ``(d, d)`` for a full map or ``(d,)`` for channel factors. The caller
    casts once to the stored dtype.
    """
    W = weight.detach().double()
    T = T.to(W.device)
    if T.ndim == 1:
        if site.kind == "norm_plus_one":
            return (1.0 + W) * T - 1.0, None
        T = torch.diag(T)
    elif site.kind == "norm_plus_one":
        raise ValueError("a norm after the MLP takes channel factors only, not a full map")
    if site.kind == "linear":  # y = x W^T + b  ->  y T = x (T^T W)^T + T^T b
        W = T.T @ W
    elif site.kind == "conv1d":  # y = x W + b  ->  y T = x (W T) + b T
        W = W @ T
    elif site.kind == "experts":  # every expert (E, d, d_ff) like a linear layer
        W = torch.einsum("ij,eik->ejk", T, W)
    else:
        raise ValueError(f"unknown fold kind {site.kind!r}")
    return W, (None if bias is None else bias.detach().double() @ T)


def fold_tensor(site: HealSite, role: str, tensor: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """One stored tensor of the fold, alone (``role``: ``"weight"`` or ``"bias"``), in float64.

    The weight and the bias of a fold change independently (``W <- T^T W``, ``b <- b T``),
    so a writer can fold each as it meets it, whichever shard holds it.
    """
    if role == "weight":
        return folded(site, tensor, None, T)[0]
    if role != "bias":
        raise ValueError(f"role must be 'weight' or 'bias', got {role!r}")
    T = T.to(tensor.device)
    return tensor.detach().double() @ (torch.diag(T) if T.ndim == 1 else T)


def _assign(param: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.to(param.dtype))

