"""The model families whose blocks :mod:`miprun.surgery` can remove.

A family is named by the ``model_type`` of its HuggingFace config. Each entry records where
the decoder blocks live in the ``*ForCausalLM`` model, which is also the state-dict key
prefix of block ``i`` in its checkpoints (``<block_path>.<i>.``). Every family listed here is
covered by a test that removes blocks, saves, reloads with ``from_pretrained`` and checks
the logits and the KV-cache path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from miprun.models.quirks import refold_gpt2_layer_scale


@dataclass(frozen=True)
class Family:
    """One supported architecture.

    Attributes
    ----------
    model_type : str
        ``config.model_type`` of the family.
    name : str
        Human-readable name.
    block_path : str
        Dotted attribute path of the decoder block list in the ``*ForCausalLM`` model.
    on_renumber : callable, optional
        ``on_renumber(block, old, new)``: what a block moving from index ``old`` to ``new``
        needs besides the generic renumbering of its ``layer_idx`` (GPT-2 scales attention
        by ``1 / (layer_idx + 1)``: the ratio is folded into its query weights).
    """

    model_type: str
    name: str
    block_path: str
    on_renumber: Callable[[nn.Module, int, int], None] | None = None


_FAMILIES = (
    Family("llama", "Llama", "model.layers"),
    Family("mistral", "Mistral", "model.layers"),
    Family("mixtral", "Mixtral", "model.layers"),
    Family("qwen2", "Qwen2", "model.layers"),
    Family("qwen3", "Qwen3", "model.layers"),
    Family("gemma", "Gemma", "model.layers"),
    Family("gemma2", "Gemma 2", "model.layers"),
    Family("gemma3_text", "Gemma 3 (text)", "model.layers"),
    Family("phi3", "Phi-3", "model.layers"),
    Family("gpt2", "GPT-2", "transformer.h", on_renumber=refold_gpt2_layer_scale),
    Family("opt", "OPT", "model.decoder.layers"),
    Family("gpt_neox", "GPT-NeoX", "gpt_neox.layers"),
)

FAMILIES: dict[str, Family] = {f.model_type: f for f in _FAMILIES}


def supported_families() -> tuple[str, ...]:
    """The ``model_type`` values that block removal supports, in a stable order."""
    return tuple(FAMILIES)


def family_of(config, model_name: str | None = None) -> Family:
    """The :class:`Family` of a config.

    Parameters
    ----------
    config : transformers.PretrainedConfig
        A model config (the decoder's own config, e.g. ``LlamaConfig``).
    model_name : str, optional
        Class name of the model, for the error message (default: the config's
        ``architectures`` or its class name).

    Raises
    ------
    ValueError
        When ``config.model_type`` is not one of :func:`supported_families`.
    """
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        arch = model_name or (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise ValueError(
            f"architecture {arch} (model_type {model_type!r}) is not supported for block removal; "
            f"supported model types: {', '.join(supported_families())}"
        )
    return family
