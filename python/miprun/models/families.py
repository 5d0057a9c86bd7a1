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
    heal : HealSite, optional
        Where a map healing a cut after this block folds in (None: no exact fold known).
    bos_first : bool
        Every sequence the model reads must start with its BOS token (Gemma: without it
        Gemma-3-270M's WikiText-2 perplexity is 93 instead of 26), so calibration and
        evaluation windows cut from a text each start with one.
    """

    model_type: str
    name: str
    block_path: str
    on_renumber: Callable[[nn.Module, int, int], None] | None = None
    heal: HealSite | None = None
    bos_first: bool = False


#: How a map ``T`` (``m -> m T``) on a block's MLP output folds into the weight producing it.
#: ``linear``: ``nn.Linear`` (weight ``(d, d_ff)``, optional bias): ``W <- T^T W``, ``b <- T^T b``.
#: ``conv1d``: GPT-2's ``Conv1D`` (weight ``(d_ff, d)``): ``W <- W T``, ``b <- b T``.
#: ``experts``: a fused expert tensor ``(E, d, d_ff)``: every expert's ``W_e <- T^T W_e`` (the
#: MoE output is a gate-weighted sum of the experts', so a linear map commutes with it).
#: ``norm_plus_one``: a Gemma RMSNorm after the MLP (``y = n(x) * (1 + w)``): only a diagonal
#: ``T`` folds exactly, as ``1 + w <- (1 + w) * diag(T)``.
FOLD_KINDS = ("linear", "conv1d", "experts", "norm_plus_one")


@dataclass(frozen=True)
class HealSite:
    """Where a block's MLP adds into the residual stream, and how a map on that output folds.

    The block's output must be ``a + m``, with ``m`` the output of the module at ``output``
    and ``a`` the residual stream before it (nothing applied after the sum): then healing a
    cut after the block replaces ``m`` by ``m T`` and folds ``T`` into the ``weight`` (and
    ``bias``) of that module.

    Attributes
    ----------
    output : str
        Dotted path, inside a block, of the module whose output ``m`` is.
    weight : str
        Dotted path, inside a block, of the parameter ``T`` folds into.
    bias : str or None
        Dotted path of the bias added with it (None: no bias).
    kind : str
        One of :data:`FOLD_KINDS`.
    exact : callable, optional
        ``exact(config) -> reason or None``: why the fold is not exact for this config
        (OPT with its layer norm after the residual sum), None when it is.
    """

    output: str
    weight: str
    bias: str | None
    kind: str
    exact: Callable[[object], str | None] | None = None

    @property
    def full_map(self) -> bool:
        """Whether a full ``d x d`` map folds exactly (else only a per-channel scale)."""
        return self.kind != "norm_plus_one"


def _opt_fold(config) -> str | None:
    if getattr(config, "do_layer_norm_before", True):
        return None
    return "OPT with do_layer_norm_before=False applies a layer norm after the residual sum"


_DOWN = HealSite("mlp.down_proj", "mlp.down_proj.weight", "mlp.down_proj.bias", "linear")
_GEMMA_POST_NORM = HealSite("post_feedforward_layernorm", "post_feedforward_layernorm.weight", None, "norm_plus_one")


_FAMILIES = (
    Family("llama", "Llama", "model.layers", heal=_DOWN),
    Family("mistral", "Mistral", "model.layers", heal=_DOWN),
    Family("mixtral", "Mixtral", "model.layers",
           heal=HealSite("mlp", "mlp.experts.down_proj", None, "experts")),
    Family("qwen2", "Qwen2", "model.layers", heal=_DOWN),
    Family("qwen3", "Qwen3", "model.layers", heal=_DOWN),
    Family("gemma", "Gemma", "model.layers", heal=_DOWN, bos_first=True),
    Family("gemma2", "Gemma 2", "model.layers", heal=_GEMMA_POST_NORM, bos_first=True),
    Family("gemma3_text", "Gemma 3 (text)", "model.layers", heal=_GEMMA_POST_NORM, bos_first=True),
    Family("phi3", "Phi-3", "model.layers", heal=_DOWN),
    Family("gpt2", "GPT-2", "transformer.h", on_renumber=refold_gpt2_layer_scale,
           heal=HealSite("mlp.c_proj", "mlp.c_proj.weight", "mlp.c_proj.bias", "conv1d")),
    Family("opt", "OPT", "model.decoder.layers", heal=HealSite("fc2", "fc2.weight", "fc2.bias", "linear", _opt_fold)),
    Family("gpt_neox", "GPT-NeoX", "gpt_neox.layers",
           heal=HealSite("mlp.dense_4h_to_h", "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias", "linear")),
)

FAMILIES: dict[str, Family] = {f.model_type: f for f in _FAMILIES}


def bos_first(config) -> bool:
    """Whether windows cut from a text must each start with the BOS token for this model (:attr:`Family.bos_first`)."""
    family = FAMILIES.get(getattr(config, "model_type", None))
    return family is not None and family.bos_first


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
