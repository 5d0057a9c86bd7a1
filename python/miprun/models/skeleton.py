"""A causal LM built from its config on the meta device: its parameter names and shapes, no memory.

The checkpoint check (:mod:`miprun.models.integrity`) compares a checkpoint's headers with
such a skeleton; streaming (:mod:`miprun.hidden.stream`) fills one block at a time.
"""

from __future__ import annotations

import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoModelForCausalLM

__all__ = ["build_meta_model"]


def build_meta_model(config, dtype: torch.dtype, attn_implementation: str | None = None, *,
                     trust_remote_code: bool = False) -> nn.Module:
    """A causal LM whose parameters live on the meta device (no memory); buffers are real.

    Buffers are left real (on the CPU) because the ones a checkpoint does not store are
    computed at construction (rotary ``inv_freq``, Gemma's ``embed_scale``) and are tiny;
    re-deriving them later would need per-architecture code.
    """
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    return model.eval()
