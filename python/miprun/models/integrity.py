"""The one check of a model's files against its config, run by every command before any long work.

Only headers are read; no weight is loaded. :func:`check_checkpoint` checks:

- safetensors, one ``model.safetensors`` or shards listed by ``model.safetensors.index.json``:
  every file is whole (:func:`~miprun.models.checkpoint.read_header`: the header length, the
  JSON header, each tensor's byte range against its dtype and shape, the file ending exactly
  where its last tensor does), and the index agrees with the shards (every shard it names
  exists, every tensor it names is in that shard, no shard holds a tensor it leaves out);
- the tensors against the model ``config.json`` describes, built on the meta device: none
  missing, none left over, every shape equal. Checkpoint names are mapped to the model's as
  transformers maps them when it loads (its renamings, the base-model prefix), and a tied
  weight need be stored once;
- a GGUF file: the tensor data its header describes lies inside the file, and its tensors
  hold exactly the blocks its metadata counts.

Loading through transformers is held to the same standard: :func:`check_loading_info` turns
the missing, unexpected and mismatched keys of its loading report into an error, so that no
weight is ever left randomly initialised.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import nn

from miprun.models.blocks import find_blocks, num_blocks_of
from miprun.models.checkpoint import INDEX_NAME, SINGLE_NAME, BrokenCheckpointError, Checkpoint
from miprun.models.gguf import require_gguf
from miprun.models.gguf_header import read_gguf_header
from miprun.models.skeleton import build_meta_model

__all__ = ["BrokenCheckpointError", "check_checkpoint", "check_model_tensors", "check_loading_info", "model_keys",
           "check_gguf_file", "tensor_mismatch_error", "describe_names"]

#: Buffers older checkpoints store that current models compute (transformers ignores them too).
_IGNORED_UNEXPECTED = (r"rotary_emb\.inv_freq$", r"(^|\.)position_ids$")
_GGUF_BLOCK = re.compile(r"^blk\.(\d+)\.")


def check_checkpoint(folder, config, *, gguf_file=None, trust_remote_code: bool = False) -> None:
    """Raise unless the model's files are whole and hold exactly the weights ``config`` describes.

    Parameters
    ----------
    folder : path or None
        The local model folder; None for a hub id (transformers downloads the files, and
        :func:`check_loading_info` checks what it loaded).
    config : transformers.PretrainedConfig
        The model's config (``config.json``, or the one a GGUF file gives).
    gguf_file : path, optional
        The GGUF file the model is read from.
    trust_remote_code : bool
        Allow the checkpoint's own code to build the skeleton the tensors are compared with.

    Raises
    ------
    BrokenCheckpointError
        (a ``ValueError``) A truncated or corrupt file, an index that does not agree with
        its shards, tensors missing, left over or of another shape than ``config`` says.
    FileNotFoundError
        A shard the index names is absent.
    """
    if gguf_file is not None:
        check_gguf_file(gguf_file, config)
        return
    if folder is None:
        return
    folder = Path(folder)
    if not ((folder / SINGLE_NAME).exists() or (folder / INDEX_NAME).exists()):
        return  # pickled weights (pytorch_model.bin) have no header to read: the loading report checks them
    checkpoint = Checkpoint(folder)
    if getattr(config, "quantization_config", None) is not None:
        return  # packed quantised weights have their own names and shapes: the loading report checks them
    check_model_tensors(checkpoint, _skeleton(config, folder, trust_remote_code))


def _skeleton(config, where, trust_remote_code: bool) -> nn.Module:
    try:
        return build_meta_model(config, torch.float32, trust_remote_code=trust_remote_code)
    except ImportError:
        raise
    except Exception as exc:  # a model's constructor rejects odd sizes in many ways: one message
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"the config.json of {where} describes a model transformers cannot build ({first}); "
                         f"fix config.json or re-download the model") from None


# ----------------------------------------------------------------------------- tensors against the model
def check_model_tensors(checkpoint: Checkpoint, model: nn.Module) -> None:
    """Raise unless ``checkpoint`` holds exactly the tensors ``model`` reads, in the shapes it has.

    Parameters
    ----------
    checkpoint : Checkpoint
    model : torch.nn.Module
        The model the checkpoint is to be loaded into, e.g. built on the meta device from
        the folder's ``config.json``.

    Raises
    ------
    BrokenCheckpointError
        Naming what is missing, left over and of the wrong shape (a count and a few names),
        and the block counts when config.json and the weights disagree on them.
    """
    state = model.state_dict(keep_vars=True)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    required = {n for n, _ in model.named_parameters()} - tied  # named_parameters drops tied duplicates
    present, merged = model_keys(checkpoint.tensors, model, state)
    missing = _unignored(required - set(present), getattr(model, "_keys_to_ignore_on_load_missing", None))
    unexpected = _unignored(set(present) - set(state),
                            [*(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()),
                             *_IGNORED_UNEXPECTED])
    mismatched = set()
    for key, name in present.items():
        stored = checkpoint.tensors[name].shape
        if key in state and key not in merged and tuple(state[key].shape) != tuple(stored):
            mismatched.add(_shape_note(name, stored, state[key].shape))
    if missing or unexpected or mismatched:
        raise tensor_mismatch_error(checkpoint.model_dir, type(model).__name__, missing,
                                    {present[k] for k in unexpected}, mismatched,
                                    blocks=_block_counts(model, set(present)))


def model_keys(names, model: nn.Module, state: dict) -> tuple[dict[str, str], set[str]]:
    """Model key -> checkpoint name of every stored tensor, and the model keys several tensors merge into."""
    rename = _renamer(model, state)
    present: dict[str, str] = {}
    merged: set[str] = set()
    for name in sorted(names):
        key, is_merged = rename(name)
        if is_merged:
            merged.add(key)
        present.setdefault(key, name)
    return present, merged


def _renamer(model: nn.Module, state: dict):
    """``name -> (model key, merged)``: checkpoint names mapped as transformers maps them when it loads."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    try:  # transformers 5: renamings (legacy names) and converters (tensors merged into one)
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
        transforms = get_model_conversion_mapping(model)
    except ImportError:
        transforms = None
    if transforms is None:
        def rename(name):
            if name not in state and prefix and f"{prefix}.{name}" in state:
                return f"{prefix}.{name}", False
            return name, False
        return rename
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]

    def rename(name):
        key, pattern = rename_source_key(name, renamings, converters, prefix or None, state)
        if key not in state and name in state:  # as transformers does: only the prefix may differ
            key, pattern = rename_source_key(name, [], [], prefix or None, state)
        return key, pattern is not None
    return rename


def _unignored(names: set[str], patterns) -> set[str]:
    regexes = [re.compile(p) for p in patterns or ()]
    return {n for n in names if not any(r.search(n) for r in regexes)}


def _shape_note(name: str, stored, expected) -> str:
    return f"{name} is {tuple(stored)} in the weights, {tuple(expected)} by config.json"


def _block_counts(model: nn.Module, keys: set[str]) -> str | None:
    """``"config.json says 6 blocks but the weights hold 5 (model.layers.5.* missing)"``, when they disagree."""
    try:
        blocks, path = find_blocks(model)
    except ValueError:
        return None
    stem = path + "."
    held = {int(k[len(stem):].split(".", 1)[0]) for k in keys
            if k.startswith(stem) and k[len(stem):].split(".", 1)[0].isdigit()}
    expected = set(range(len(blocks)))
    if held == expected:
        return None
    notes = [f"{stem}{i}.* missing" for i in sorted(expected - held)[:2]]
    notes += [f"{stem}{i}.* not read" for i in sorted(held - expected)[:2]]
    return f"config.json says {len(blocks)} blocks but the weights hold {len(held)} ({', '.join(notes)})"


def describe_names(names, *, limit: int = 4) -> str:
    """``"N: a, b, c, d, ..."`` - a count and the first few names, sorted, for error messages."""
    names = sorted(names)
    more = ", ..." if len(names) > limit else ""
    return f"{len(names)}: {', '.join(names[:limit])}{more}"


def tensor_mismatch_error(where, model_class: str, missing, unexpected=(), mismatched=(), *,
                          blocks: str | None = None, notes=()) -> BrokenCheckpointError:
    """The error for weights that do not fit the model ``config.json`` describes."""
    parts = [blocks] if blocks else []
    if missing:
        parts.append(f"missing tensors ({describe_names(missing)})")
    if unexpected:
        parts.append(f"unexpected tensors ({describe_names(unexpected)})")
    if mismatched:
        parts.append(f"tensors of the wrong shape ({describe_names(mismatched, limit=3)})")
    parts += list(notes)
    return BrokenCheckpointError(f"the weights in {where} do not match the {model_class} its config.json describes: "
                                 f"{'; '.join(parts)}; the download is incomplete or config.json was edited - "
                                 f"fix config.json or re-download the model")


# ----------------------------------------------------------------------------- transformers' loading report
def check_loading_info(info: dict, where, model_class: str) -> None:
    """Raise when ``from_pretrained(..., output_loading_info=True)`` left weights unloaded.

    ``missing_keys`` were filled with random values, ``unexpected_keys`` were ignored and
    ``mismatched_keys`` (``(name, checkpoint shape, model shape)``, with
    ``ignore_mismatched_sizes=True``) were re-initialised; ``error_msgs`` say why some tensor
    could not be loaded. Tied weights (``lm_head`` tied to the embeddings) and computed
    buffers are not among the missing ones in transformers' report.

    Raises
    ------
    BrokenCheckpointError
    """
    missing = set(info.get("missing_keys") or ())
    unexpected = set(info.get("unexpected_keys") or ())
    mismatched = {_shape_note(k[0], k[1], k[2]) for k in info.get("mismatched_keys") or ()}
    errors = [" ".join(str(m).split()) for m in info.get("error_msgs") or ()]
    if missing or unexpected or mismatched or errors:
        notes = [f"transformers could not load some weights ({errors[0][:300]})"] if errors else []
        raise tensor_mismatch_error(where, model_class, missing, unexpected, mismatched, notes=notes)


# ----------------------------------------------------------------------------- GGUF
def check_gguf_file(gguf_file, config=None) -> None:
    """Raise unless a GGUF file holds all the tensor data its header describes, and the blocks it counts.

    Raises
    ------
    BrokenCheckpointError
        A header that cannot be read, tensor data past the end of the file (truncated),
        bytes past the last tensor's padding, or block tensors other than ``blk.0`` ..
        ``blk.{T-1}`` for the ``T`` blocks ``config`` (default: the metadata) counts.
    """
    require_gguf()
    from gguf import GGML_QUANT_SIZES  # the gguf package knows every ggml type's block size

    path = Path(gguf_file)
    size = path.stat().st_size
    try:
        header = read_gguf_header(path)
    except ValueError as exc:
        raise BrokenCheckpointError(f"{path} is truncated or corrupt: {exc}; re-download it") from None
    end = header.data_start
    for t in header.tensors:
        block, type_bytes = GGML_QUANT_SIZES.get(t.ggml_type, (0, 0))
        if block:  # a type the gguf package does not know cannot be measured; the loader names it
            end = max(end, header.data_start + t.offset + math.prod(t.dims) // block * type_bytes)
    if end > size:
        raise BrokenCheckpointError(f"{path} is truncated: its header promises {end:,} bytes, the file has "
                                    f"{size:,}; re-download it")
    if size > -(-end // header.alignment) * header.alignment:
        raise BrokenCheckpointError(f"{path} is longer than its header says: its tensors end at byte {end:,}, the "
                                    f"file has {size:,} (damaged, or another file's bytes appended); re-download it")
    arch = header.metadata.get("general.architecture", "")
    count = num_blocks_of(config) if config is not None else header.metadata.get(f"{arch}.block_count")
    held = {int(m.group(1)) for t in header.tensors if (m := _GGUF_BLOCK.match(t.name))}
    if count is not None and held != set(range(int(count))):
        notes = ([f"blk.{i}.* missing" for i in sorted(set(range(int(count))) - held)[:2]]
                 + [f"blk.{i}.* not read" for i in sorted(held - set(range(int(count))))[:2]])
        raise BrokenCheckpointError(f"{path} counts {count} blocks but its tensors hold {len(held)} "
                                    f"({', '.join(notes)}); re-download it")
