"""Hidden states of a model spread over several devices with an accelerate device map.

For models that fit across several GPUs (or GPUs plus CPU/disk offload), the model is
loaded with ``from_pretrained(device_map=...)``; accelerate's hooks keep each block's
weights where the map puts them (and page in offloaded ones for their turn). The
calibration loop then runs one block at a time as usual, moving the hidden state (and the
blocks' extra arguments: masks, rotary tables) to each block's execution device when it
changes. The ``(b, h_b)`` contract is that of :func:`miprun.layerwise.iter_hidden_states`,
except that each ``h_b`` lies on the device of the block that produced it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from miprun.hidden.capture import capture_block_args, move_to, run_block
from miprun.models.blocks import find_blocks

__all__ = ["load_with_device_map", "execution_device", "iter_hidden_states_device_map"]


def load_with_device_map(model_dir, *, device_map="auto", dtype=None, max_memory: dict | None = None,
                         offload_folder=None, attn_implementation: str | None = None,
                         trust_remote_code: bool = False):
    """Load a causal LM across devices with accelerate's device map.

    Parameters
    ----------
    model_dir : path or str
        Checkpoint folder or hub id.
    device_map : "auto", "balanced", "sequential" or dict
        As ``from_pretrained``: module name -> device (``0``, ``"cuda:1"``, ``"cpu"``, ``"disk"``).
    dtype : torch.dtype, optional
        Default: the checkpoint's.
    max_memory : dict, optional
        Device -> budget (e.g. ``{0: "70GiB", "cpu": "200GiB"}``) for ``"auto"``.
    offload_folder : path, optional
        Where blocks mapped to ``"disk"`` are kept.
    attn_implementation : str, optional
        Default: transformers' choice.
    trust_remote_code : bool
        Allow the checkpoint's own code (off by default).
    """
    from transformers import AutoModelForCausalLM

    kwargs = {"device_map": device_map, "dtype": dtype if dtype is not None else "auto",
              "trust_remote_code": trust_remote_code}
    if max_memory is not None:
        kwargs["max_memory"] = max_memory
    if offload_folder is not None:
        kwargs["offload_folder"] = str(Path(offload_folder))
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs).eval()


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device, else its first real parameter's."""
    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", ())]:
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    for p in module.parameters():
        if not p.is_meta:
            return p.device
    return torch.device("cpu")


def iter_hidden_states_device_map(model: nn.Module, input_ids: torch.Tensor, *, batch_size: int = 8,
                                  progress: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(b, h_b)`` for ``b = 0..T`` of a model dispatched over devices, block by block.

    Parameters
    ----------
    model : transformers PreTrainedModel
        Loaded with a device map (:func:`load_with_device_map`), or on one device.
    input_ids : LongTensor, shape (n_samples, seq_len)
    batch_size : int
        Samples per forward call of a block.
    progress : bool
        A progress bar over the blocks.

    Yields
    ------
    b : int
    h_b : Tensor, shape (n_samples, seq_len, d)
        On the execution device of block ``b - 1`` (``h_0`` on block 0's).
    """
    from tqdm.auto import tqdm

    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.numel() == 0:
        raise ValueError("input_ids must be a non-empty (n_samples, seq_len) tensor of token ids")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    blocks, _path = find_blocks(model)
    devices = [execution_device(b) for b in blocks]
    first = execution_device(model.get_input_embeddings())
    with torch.no_grad():
        h, calls = capture_block_args(model, blocks, input_ids.long(), batch_size, first)
    h = h.to(devices[0])
    yield 0, h
    # (id of captured arguments, device) -> (the original, kept alive so its id stays unique; moved args; kwargs)
    moved: dict[tuple[int, torch.device], tuple] = {}
    bar = tqdm(total=len(blocks), desc="blocks", unit="block", disable=not progress)
    try:
        for i, block in enumerate(blocks):
            dev = devices[i]
            if h.device != dev:
                h = h.to(dev)
            here = []
            for rows, args, kwargs in calls[i]:
                key = (id(kwargs), dev)
                if key not in moved:
                    moved[key] = (kwargs, move_to(args, dev), move_to(kwargs, dev))
                here.append((rows, *moved[key][1:]))
            with torch.no_grad():
                h = run_block(block, h, here)
            calls[i] = []
            bar.update(1)
            yield i + 1, h
    finally:
        bar.close()
