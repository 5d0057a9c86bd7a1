"""Remove decoder blocks from a HuggingFace causal LM so that it still loads and runs anywhere.

After removal a model must behave, on reload with ``from_pretrained``, exactly like the
original model with the removed blocks replaced by the identity. Three things keep it so:

- every index a block stores about itself (``layer_idx`` in attention modules, which the
  KV cache indexes by, and the like) is renumbered ``0..k-1``;
- the config says ``k`` blocks, under its own name for the count (``n_layer`` for GPT-2);
- every per-layer list in the config (``layer_types``: sliding vs full attention in
  Qwen2/3 and Gemma 2/3, and any other list with one entry per block) keeps the entries
  of the kept blocks, so each block keeps its attention pattern.
"""

from __future__ import annotations

import copy
import logging
import operator
from collections.abc import Sequence
from typing import Any

from torch import nn

from miprun.models.blocks import block_prefix, find_blocks, text_config
from miprun.models.families import family_of, supported_families

__all__ = [
    "find_blocks",
    "block_prefix",
    "prune_config",
    "remove_blocks",
    "kept_after",
    "supported_families",
    "per_layer_fields",
]

logger = logging.getLogger(__name__)

#: Attributes in which a block's modules store their own block index.
LAYER_INDEX_ATTRS = ("layer_idx", "layer_id", "layer_number", "layer_index", "layer_num", "block_idx", "block_id")

#: Config fields that may hold a list as long as the block count without being per-layer.
_NOT_PER_LAYER = frozenset({
    "architectures", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_decoder_ids",
    "mtp_layer_types", "mtp_mlp_layer_types", "id2label", "label2id",
})


def _check_kept(kept_blocks: Sequence[int], num_blocks: int) -> list[int]:
    kept = [_as_index(b, "kept_blocks") for b in kept_blocks]
    if len(set(kept)) != len(kept):
        raise ValueError(f"kept_blocks has duplicates: {sorted(kept)}")
    bad = [b for b in kept if not 0 <= b < num_blocks]
    if bad:
        raise ValueError(f"kept_blocks {bad} are outside 0..{num_blocks - 1} (the model has {num_blocks} blocks)")
    if not kept:
        raise ValueError(f"kept_blocks is empty: at least one of the {num_blocks} blocks must be kept")
    return sorted(kept)


def kept_after(removed_blocks: Sequence[int], num_blocks: int) -> list[int]:
    """The blocks that stay when ``removed_blocks`` go, after checking them: integers, distinct, in range, not all."""
    removed = [_as_index(b, "blocks to remove") for b in removed_blocks]
    if len(set(removed)) != len(removed):
        dup = sorted({b for b in removed if removed.count(b) > 1})
        raise ValueError(f"blocks to remove has duplicates {dup} in {list(removed_blocks)}")
    bad = [b for b in removed if not 0 <= b < num_blocks]
    if bad:
        raise ValueError(f"blocks {bad} are outside 0..{num_blocks - 1}: the model has {num_blocks} blocks")
    if len(removed) >= num_blocks:
        raise ValueError(f"cannot remove {len(removed)} of {num_blocks} blocks: at least one block must stay")
    gone = set(removed)
    return [i for i in range(num_blocks) if i not in gone]


def _as_index(b, what: str) -> int:
    # bool is an int subclass; True as a block index is almost certainly a mistake.
    if isinstance(b, bool) or not hasattr(b, "__index__"):
        raise ValueError(f"{what} must hold integer block indices, got {b!r} ({type(b).__name__})")
    return operator.index(b)


def per_layer_fields(config) -> list[str]:
    """Names of the config fields treated as per-layer lists (one entry per block).

    The rule is generic: a top-level list or tuple field whose length equals the block
    count is per-layer (``layer_types``, ``mlp_layer_types``, per-layer widths, ...),
    except fields known to hold something else (token ids, ``architectures``, ...).
    """
    cfg = text_config(config)
    n = cfg.num_hidden_layers
    out = []
    for name, value in vars(cfg).items():
        if name.startswith("_") or name in _NOT_PER_LAYER or name.endswith(("token_id", "token_ids")):
            continue
        if isinstance(value, (list, tuple)) and len(value) == n:
            out.append(name)
    return out


def prune_config(config, kept_blocks: Sequence[int]) -> None:
    """Update a config in place so that it describes only the kept blocks.

    - the block count (``num_hidden_layers``, which a family's ``attribute_map`` routes to
      its own name, e.g. ``n_layer`` for GPT-2) becomes ``len(kept_blocks)``;
    - every per-layer list (see :func:`per_layer_fields`: ANY top-level list/tuple field
      whose length equals the old block count, e.g. ``layer_types``) keeps the entries of the
      kept blocks, in order;
    - Qwen2/3's ``max_window_layers`` (blocks below it use full attention) becomes the
      number of kept blocks below it, which keeps the pattern it describes;
    - per-layer overrides (``per_layer_config``) move to the new indices.

    Gemma 3's ``sliding_window_pattern`` is left as it is: the saved ``layer_types`` list,
    which takes precedence over the pattern, holds each kept block's type.

    Parameters
    ----------
    config : transformers.PretrainedConfig
        Config of a supported family (also works on a config loaded with ``AutoConfig``,
        without a model).
    kept_blocks : sequence of int
        0-based indices, in the current model, of the blocks that stay.

    Raises
    ------
    ValueError
        Unsupported family, or ``kept_blocks`` with duplicates, out-of-range or no entries.
    """
    family_of(config)
    cfg = text_config(config)
    old = int(cfg.num_hidden_layers)
    kept = _check_kept(kept_blocks, old)
    # Re-validated at the end, but only when it was valid before: some configs on the Hub
    # load while breaking a validator, and pruning should not be what refuses them.
    was_valid = _is_valid(cfg)
    fields = per_layer_fields(cfg)
    overrides = _per_layer_overrides(cfg)
    if overrides is not None:
        cfg.per_layer_config = None  # re-applied below, once the block count is the new one
    for name in fields:
        value = getattr(cfg, name)
        setattr(cfg, name, type(value)(value[i] for i in kept))
    mwl = vars(cfg).get("max_window_layers")
    if isinstance(mwl, int) and not isinstance(mwl, bool):
        cfg.max_window_layers = sum(1 for i in kept if i < mwl)
    cfg.num_hidden_layers = len(kept)
    if overrides is not None:
        new_index = {old_i: new_i for new_i, old_i in enumerate(kept)}
        cfg.per_layer_config = {new_index[i]: o for i, o in overrides.items() if i in new_index}
    if was_valid:
        cfg.validate()
    logger.info("pruned config to %d of %d blocks; per-layer fields filtered: %s", len(kept), old, fields)


def _is_valid(cfg) -> bool:
    validate = getattr(cfg, "validate", None)  # strict configs (transformers 5) have one
    if not callable(validate):
        return False
    try:
        validate()
    except Exception:  # any validator error means "was not valid before"
        return False
    return True


def _per_layer_overrides(cfg) -> dict[int, dict] | None:
    spec = vars(cfg).get("_heterogeneity_spec")
    if spec is None:
        return None
    return {int(i): dict(o) for i, o in spec.per_layer_overrides.items()}


def _renumber_block(block: nn.Module, old: int, new: int) -> None:
    # Shift rather than assign, so a 1-based index (Megatron's layer_number) stays 1-based.
    for module in block.modules():
        for name in LAYER_INDEX_ATTRS:
            value = getattr(module, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(module, name, value - old + new)


def _configs_of(model: nn.Module) -> list:
    """Every distinct config object the model's modules hold (normally just one, shared)."""
    seen: dict[int, Any] = {}
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


def _renumber_device_map(model: nn.Module, path: str, kept: list[int]) -> None:
    device_map = getattr(model, "hf_device_map", None)
    if not isinstance(device_map, dict):
        return
    prefix = path + "."
    new_index = {old: new for new, old in enumerate(kept)}
    out = {}
    for key, dev in device_map.items():
        if key.startswith(prefix):
            head, _, rest = key[len(prefix):].partition(".")
            if head.isdigit():
                if int(head) not in new_index:
                    continue
                key = f"{prefix}{new_index[int(head)]}" + (f".{rest}" if rest else "")
        out[key] = dev
    model.hf_device_map = out


def remove_blocks(model: nn.Module, blocks: Sequence[int]) -> nn.Module:
    """Remove decoder blocks from a model, in place.

    Deletes the blocks, renumbers every block index the kept blocks' modules store
    (``layer_idx`` and the names in ``LAYER_INDEX_ATTRS``) to ``0..k-1``, and updates the
    config with :func:`prune_config` (block count and per-layer lists). The result saved
    with ``save_pretrained`` reloads with ``from_pretrained`` as the same function: the
    original model with the removed blocks replaced by the identity.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM of a supported family (see :func:`supported_families`).
    blocks : sequence of int
        0-based indices, in the current model, of the blocks to remove; no duplicates, at
        least one block must stay. An empty sequence leaves the model unchanged.

    Returns
    -------
    model
        The same object, pruned.

    Raises
    ------
    ValueError
        Unsupported architecture, or bad block indices (message gives the values).
    """
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no .config; expected a HuggingFace PreTrainedModel")
    family = family_of(config, type(model).__name__)
    block_list, path = find_blocks(model)
    num_blocks = len(block_list)
    declared = text_config(config).num_hidden_layers
    if declared != num_blocks:
        raise ValueError(
            f"{type(model).__name__} has {num_blocks} blocks at {path} but its config says num_hidden_layers="
            f"{declared}; the model and its config disagree"
        )
    kept = kept_after(blocks, num_blocks)
    if len(kept) == num_blocks:
        return model
    configs = [c for c in _configs_of(model) if getattr(text_config(c), "num_hidden_layers", None) == num_blocks]
    for cfg in configs:
        prune_config(copy.deepcopy(cfg), kept)  # a dry run: a config it cannot prune leaves the model untouched

    for new, old in enumerate(kept):
        if new != old:
            _renumber_block(block_list[old], old, new)
            if family.on_renumber is not None:
                family.on_renumber(block_list[old], old, new)
    for i in sorted(set(range(num_blocks)) - set(kept), reverse=True):
        del block_list[i]  # ModuleList renumbers its keys 0..k-1
    for cfg in configs:
        # Checked again: two configs may share one text config, which is pruned once.
        if text_config(cfg).num_hidden_layers == num_blocks:
            prune_config(cfg, kept)
    _renumber_device_map(model, path, kept)
    return model
