"""What some families need besides the generic surgery, named by the family that needs it."""

from __future__ import annotations

from torch import nn

__all__ = ["refold_gpt2_layer_scale"]


def refold_gpt2_layer_scale(block: nn.Module, old: int, new: int) -> None:
    """Keep GPT-2's ``scale_attn_by_inverse_layer_idx`` scores unchanged under renumbering.

    With that option the attention scores are scaled by ``1 / (layer_idx + 1)``, computed
    from the index when the model is built; a block moving from ``old`` to ``new`` would
    score differently after reload. The ratio ``(new + 1) / (old + 1)`` is folded into the
    query projection instead (one rounding of those weights at their dtype).
    """
    factor = (new + 1) / (old + 1)
    for attn in (getattr(block, "attn", None), getattr(block, "crossattention", None)):
        if attn is None or not getattr(attn, "scale_attn_by_inverse_layer_idx", False):
            continue
        q_proj = getattr(attn, "q_attn", None) if getattr(attn, "is_cross_attention", False) else None
        if q_proj is not None:
            q_proj.weight.data.mul_(factor)
            q_proj.bias.data.mul_(factor)
        else:
            # c_attn is a Conv1D of weight (in, 3 * embed): the query is the first third of its outputs.
            e = attn.embed_dim
            attn.c_attn.weight.data[:, :e].mul_(factor)
            attn.c_attn.bias.data[:e].mul_(factor)
        if hasattr(attn, "scaling"):  # precomputed from layer_idx in transformers 5; older ones compute it per call
            attn.scaling = attn.scaling * (old + 1) / (new + 1)
