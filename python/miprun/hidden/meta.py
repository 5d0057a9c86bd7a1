"""A model skeleton on the meta device whose tensors are read from the shards when needed.

Parameters take no memory until :func:`load_into` replaces the named placeholders by real
tensors read from a :class:`~miprun.models.checkpoint.Checkpoint`; :func:`to_meta` puts
placeholders back, which frees them. Streaming (:mod:`miprun.hidden.stream`) runs one block
at a time this way.
"""

from __future__ import annotations

import torch
from torch import nn

from miprun.models.checkpoint import SAFETENSORS_DTYPES, Checkpoint
from miprun.models.skeleton import build_meta_model  # re-exported: streaming builds its skeleton with it

__all__ = ["build_meta_model", "checkpoint_key", "load_into", "set_tensor", "to_meta"]


def checkpoint_key(model_key: str, checkpoint: Checkpoint, base_prefix: str) -> str | None:
    """The checkpoint name of a model state-dict key (base-model checkpoints lack the wrapper prefix)."""
    if model_key in checkpoint.tensors:
        return model_key
    if base_prefix and model_key.startswith(base_prefix + "."):
        short = model_key[len(base_prefix) + 1:]
        if short in checkpoint.tensors:
            return short
    return None


def set_tensor(root: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace parameter or buffer ``name`` of ``root`` (a meta placeholder) by ``value``."""
    owner_name, _, attr = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(value, requires_grad=False)
    elif attr in owner._buffers:
        owner._buffers[attr] = value
    else:
        raise KeyError(f"{type(root).__name__} has no parameter or buffer {name!r}")


def to_meta(root: nn.Module, names) -> None:
    """Free the named tensors by putting meta placeholders of the same shape back."""
    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = root.get_submodule(owner_name) if owner_name else root
        old = owner._parameters.get(attr)
        if old is not None:
            owner._parameters[attr] = nn.Parameter(torch.empty_like(old, device="meta"), requires_grad=False)
        elif owner._buffers.get(attr) is not None:
            owner._buffers[attr] = torch.empty_like(owner._buffers[attr], device="meta")


def load_into(root: nn.Module, keys: dict[str, str], checkpoint: Checkpoint, device: torch.device,
              dtype: torch.dtype) -> None:
    """Read the named tensors from the shards and place them in ``root``, floats cast to ``dtype``.

    ``keys`` maps names relative to ``root`` to checkpoint names.
    """
    tensors = checkpoint.load(keys.values())
    for name, key in keys.items():
        t = tensors.pop(key)
        stored = SAFETENSORS_DTYPES.get(checkpoint.tensors[key].dtype)
        target = dtype if stored is not None and stored.is_floating_point else t.dtype
        set_tensor(root, name, t.to(device=device, dtype=target))
