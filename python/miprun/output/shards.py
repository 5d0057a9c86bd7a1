"""Write a pruned checkpoint shard by shard, without loading the model.

Each input safetensors file becomes one output file holding the same tensors minus the
removed blocks', with kept blocks renamed to their new indices (``model.layers.7.`` ->
``model.layers.5.``). Only one shard's tensors are in memory at a time. The config is
pruned with :func:`miprun.surgery.prune_config`, tokenizer and generation files are
copied, and the folder appears only when complete (:func:`miprun.save.atomic_output_dir`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import save_file
from transformers import AutoConfig

from miprun.hidden.memory import release_host_memory
from miprun.models.blocks import block_prefix, text_config
from miprun.models.checkpoint import INDEX_NAME, SINGLE_NAME, Checkpoint
from miprun.output.guard import atomic_output_dir, check_output_dir
from miprun.output.remote_code import carry_remote_code
from miprun.output.save import write_report_and_plots
from miprun.output.surgery import kept_after, prune_config

__all__ = ["write_pruned_checkpoint", "rename_map", "AUXILIARY_FILES"]

#: Files copied next to the weights: tokenizer, generation settings, chat templates.
AUXILIARY_FILES = (
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
    "chat_template.json", "chat_template.jinja",
)


def _checkpoint_prefix(checkpoint: Checkpoint, prefix: str) -> str:
    """The block prefix as the checkpoint spells it: ``model.layers.`` or, saved from a base model, ``layers.``."""
    if any(name.startswith(prefix) for name in checkpoint.tensors):
        return prefix
    short = prefix.split(".", 1)[1] if prefix.count(".") > 1 else prefix
    if short != prefix and any(name.startswith(short) for name in checkpoint.tensors):
        return short
    raise ValueError(f"checkpoint {checkpoint.model_dir} has no tensors under {prefix!r}; it does not match its "
                     "config.json's architecture")


def rename_map(names: Sequence[str], prefix: str, kept_blocks: Sequence[int]) -> dict[str, str]:
    """New names of the tensors that stay: kept blocks renumbered ``0..k-1``, the rest unchanged.

    Parameters
    ----------
    names : sequence of str
        Checkpoint tensor names.
    prefix : str
        Block prefix as spelled in the checkpoint, e.g. ``"model.layers."``.
    kept_blocks : sequence of int
        Old indices of the kept blocks, ascending.

    Returns
    -------
    dict
        Old name -> new name; tensors of removed blocks are absent.
    """
    new_index = {old: new for new, old in enumerate(sorted(kept_blocks))}
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(.*)", re.S)
    out = {}
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            out[name] = name
        elif int(m.group(1)) in new_index:
            out[name] = f"{prefix}{new_index[int(m.group(1))]}.{m.group(2)}"
    return out


def _fold_into(shard: dict, names, renames: dict, prefix: str, fold) -> None:
    """Replace, in ``shard`` (new name -> tensor), each kept block tensor that ``fold`` changes."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(.*)", re.S)
    for n in names:
        m = pattern.fullmatch(n)
        if m is None:
            continue
        old = shard[renames[n]]
        new = fold(int(m.group(1)), m.group(2), old)
        if new is not None:
            shard[renames[n]] = new.to(device="cpu", dtype=old.dtype).contiguous()


def _shard_name(i: int, n: int) -> str:
    return f"model-{i:05d}-of-{n:05d}.safetensors"


def write_pruned_checkpoint(model_dir, removed_blocks: Sequence[int], out_dir, *, report=None,
                            overwrite: bool = False, tokenizer_dir=None, plots: dict | None = None,
                            protect=(), trust_remote_code: bool = False,
                            replaced: dict | None = None, fold=None) -> Path:
    """Write ``model_dir`` without ``removed_blocks`` to ``out_dir``, one shard in memory at a time.

    The result loads with ``AutoModelForCausalLM.from_pretrained`` and holds the same
    tensors as the in-memory surgery (:func:`miprun.surgery.remove_blocks` then
    ``save_pretrained``) of the same blocks.

    Parameters
    ----------
    model_dir : path
        Input checkpoint folder (``config.json`` + safetensors, one file or sharded). Never modified.
    removed_blocks : sequence of int
        0-based indices of the blocks to remove.
    out_dir : path
        Output folder; created atomically (a temporary folder beside it, renamed when complete).
    report : dict or callable returning one, optional
        Written as ``report.json`` in the output, last.
    overwrite : bool
        Replace an existing ``out_dir`` (otherwise it is refused).
    tokenizer_dir : path, optional
        Where the tokenizer files are (default ``model_dir``).
    protect : sequence of paths
        Other inputs (the calibration source) that ``out_dir`` may not overlap.
    trust_remote_code : bool
        Allow the checkpoint's own config code (as for loading it).
    plots : mapping of file name to callable or bytes, optional
        As in :func:`miprun.save.save_pruned`: each callable writes its file at the path it is given.
    replaced : mapping of checkpoint key to tensor, optional
        Tensors written instead of the input's, cast to the stored tensor's dtype; every key
        must be one that is kept.
    fold : callable, optional
        ``fold(block, name, tensor) -> tensor or None``: for each tensor of a kept block
        (its index in the input, its name inside the block, the stored tensor), what to write
        instead (cast to the stored dtype), or None to keep it; a heal's
        :meth:`~miprun.heal.fit.Healing.fold_tensor`.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    FileNotFoundError
        Missing folder, config or shard.
    ValueError
        Bad block indices, unsupported architecture, ``out_dir`` refused (exists, or inside the input).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} has no config.json; expected a Hugging Face model folder")
    checkpoint = Checkpoint(model_dir)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    kept = kept_after(removed_blocks, int(text_config(config).num_hidden_layers))
    prefix = _checkpoint_prefix(checkpoint, block_prefix(config))
    renames = rename_map(list(checkpoint.tensors), prefix, kept)
    check_output_dir(out_dir, overwrite=overwrite, source_dir=model_dir, protect=protect)
    replaced = dict(replaced or {})
    stray = sorted(set(replaced) - set(renames))
    if stray:
        raise ValueError(f"replaced tensors {stray} are not among the kept tensors of {model_dir}")
    prune_config(config, kept)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else model_dir

    # Input files that still hold a tensor, in order; each becomes one output file.
    files = [f for f in checkpoint.files if any(checkpoint.tensors[n].file == f for n in renames)]
    sharded = (model_dir / INDEX_NAME).exists()
    out_names = {f: (_shard_name(i + 1, len(files)) if sharded else SINGLE_NAME) for i, f in enumerate(files)}

    with atomic_output_dir(out_dir, overwrite=overwrite, source_dir=model_dir, protect=protect) as tmp:
        tmp = Path(tmp)
        weight_map: dict[str, str] = {}
        total = 0
        for f in files:
            names = [n for n in renames if checkpoint.tensors[n].file == f]
            tensors = checkpoint.load(names)
            shard = {renames[n]: tensors.pop(n) for n in names}
            if fold is not None:
                _fold_into(shard, names, renames, prefix, fold)
            for n in names:
                if n in replaced:
                    old = shard[renames[n]]
                    if tuple(replaced[n].shape) != tuple(old.shape):
                        raise ValueError(f"replacement for {n} has shape {tuple(replaced[n].shape)}, the "
                                         f"checkpoint's {tuple(old.shape)}")
                    shard[renames[n]] = replaced[n].to(device="cpu", dtype=old.dtype).contiguous()
            metadata = dict(checkpoint.file_metadata.get(f) or {})
            metadata.setdefault("format", "pt")
            save_file(shard, str(tmp / out_names[f]), metadata=metadata)
            for new in shard:
                weight_map[new] = out_names[f]
            total += sum(checkpoint.tensors[n].nbytes for n in names)
            del shard, tensors
            release_host_memory()  # or freed shards pile up in the C heap
        if sharded:
            meta = {k: v for k, v in checkpoint.index_metadata.items() if k != "total_size"}
            meta["total_size"] = total
            if "total_parameters" in meta:
                meta["total_parameters"] = sum(checkpoint.tensors[n].numel for n in renames)
            index = {"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        config.save_pretrained(tmp)
        carry_remote_code(tmp, model_dir)
        for name in AUXILIARY_FILES:
            src = tokenizer_dir / name if name != "generation_config.json" else model_dir / name
            if src.exists():
                shutil.copy2(src, tmp / name)
        write_report_and_plots(tmp, report, plots)
        Checkpoint(tmp)  # the written headers and index agree, or this raises before the rename
    return Path(out_dir)
