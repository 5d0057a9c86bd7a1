"""Where a model keeps its decoder blocks, and what its config says about them.

Model facts are asked of the model or its config in one place: the block list and its
attribute path (:func:`find_blocks`), the state-dict prefix of the blocks
(:func:`block_prefix`), the decoder's own config of a multimodal model
(:func:`text_config`) and the declared depth (:func:`num_blocks_of`).
"""

from __future__ import annotations

import operator
from typing import Any

from torch import nn

from miprun.models.families import FAMILIES, family_of, supported_families

__all__ = ["BLOCK_PATHS", "find_blocks", "block_prefix", "text_config", "num_blocks_of"]

#: Where decoder blocks live, tried in order: the supported families' own paths (from their
#: registry), then other causal-LM wrappers, then the same lists inside base models.
BLOCK_PATHS = tuple(dict.fromkeys([f.block_path for f in FAMILIES.values()] + [
    "model.language_model.layers",
    "transformer.layers",
    "transformer.blocks",
    "decoder.layers",
    "layers",
    "h",
    "blocks",
]))


def text_config(config):
    """The decoder's config: the config itself, or its text part for multimodal configs."""
    get = getattr(config, "get_text_config", None)
    return get(decoder=True) if callable(get) else config


def num_blocks_of(config) -> int:
    """Number of decoder blocks a config declares (its text part for multimodal configs)."""
    n = getattr(text_config(config), "num_hidden_layers", None)
    if not isinstance(n, int):
        raise ValueError(f"cannot tell how many blocks a {type(config).__name__} has (no num_hidden_layers)")
    return n


def _get_path(obj: Any, path: str) -> Any:
    try:
        return operator.attrgetter(path)(obj)
    except AttributeError:
        return None


def find_blocks(model: nn.Module) -> tuple[nn.ModuleList, str]:
    """The decoder block list of a model and its dotted attribute path.

    Tries the usual places (``model.layers``, ``model.decoder.layers``, ``transformer.h``,
    ``gpt_neox.layers``, ``layers``, ... see ``BLOCK_PATHS``) and takes the first non-empty
    ``nn.ModuleList``; when the config states a block count, a list of that length is
    preferred. Works on any architecture (it does not check :func:`supported_families`).

    Parameters
    ----------
    model : torch.nn.Module
        A HuggingFace model (``*ForCausalLM`` or base model).

    Returns
    -------
    blocks : torch.nn.ModuleList
        The decoder blocks, in order.
    path : str
        Their attribute path, e.g. ``"model.layers"``.

    Raises
    ------
    ValueError
        When no block list is found; the message names the model class and the paths tried.
    """
    config = getattr(model, "config", None)
    expected = getattr(text_config(config), "num_hidden_layers", None) if config is not None else None
    found: list[tuple[nn.ModuleList, str]] = []
    for path in BLOCK_PATHS:
        mod = _get_path(model, path)
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            found.append((mod, path))
    for mod, path in found:
        if expected is None or len(mod) == expected:
            return mod, path
    if found:
        return found[0]
    raise ValueError(
        f"cannot find the decoder blocks of {type(model).__name__}: looked for a non-empty nn.ModuleList at "
        f"{', '.join(BLOCK_PATHS)}; this architecture is not supported (supported model types: "
        f"{', '.join(supported_families())})"
    )


def block_prefix(model_or_config) -> str:
    """The state-dict key prefix of the blocks, e.g. ``"model.layers."`` (block ``i`` is ``prefix + f"{i}."``).

    Parameters
    ----------
    model_or_config : torch.nn.Module or transformers.PretrainedConfig
        A model (the prefix is read from where its blocks are), or a config of a supported
        family (the prefix of that family's ``*ForCausalLM`` checkpoints).

    Notes
    -----
    Checkpoints saved from a base model (e.g. the original GPT-2 files, keys ``h.0...``)
    lack the base-model attribute; a caller renaming keys of such files should also accept
    the prefix without its first component.
    """
    if isinstance(model_or_config, nn.Module):
        return find_blocks(model_or_config)[1] + "."
    return family_of(model_or_config).block_path + "."
