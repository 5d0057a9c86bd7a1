"""Hidden states block by block: the layer-by-layer calibration loop of SparseGPT and Wanda, once for every source.

The model's own forward runs once per batch only up to its blocks: each block's ``forward``
is briefly replaced by a catcher that records its arguments (every block's, because some
families give blocks different masks or rotary tables: sliding vs full attention in
Gemma 2/3 and Qwen2/3) and passes its input through; the last catcher stops the forward.
Then one block at a time runs over all batches, its outputs becoming the next block's
inputs. Only the current state is kept, and no KV cache is built.

Where a block's weights come from is the :class:`~miprun.hidden.sources.BlockSource`'s
business (a loaded model, the safetensors shards, an accelerate device map); the runner
calls its hooks around the capture and around each block.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from miprun.hidden.capture import capture_block_args, move_to, run_block
from miprun.hidden.in_memory import InMemorySource
from miprun.util.progress import progress_bar

if TYPE_CHECKING:
    from miprun.hidden.sources import BlockSource

__all__ = ["iter_hidden_states"]

_HOOKS = ("enter_capture", "leave_capture", "block_device", "enter_block", "leave_block", "close")


def iter_hidden_states(source, input_ids: torch.Tensor, *, batch_size: int = 8, progress: bool = True,
                       device=None, blocks: nn.ModuleList | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield the hidden states ``h_0 .. h_T`` of a causal LM over calibration tokens, one at a time.

    Arguments are checked when this is called; the work happens as states are drawn.

    Parameters
    ----------
    source : BlockSource or transformers PreTrainedModel
        Where the blocks' weights come from (:func:`miprun.hidden.sources.open_source`); a
        loaded causal LM is wrapped in an :class:`~miprun.hidden.in_memory.InMemorySource`.
    input_ids : LongTensor, shape (n_samples, seq_len)
        Calibration tokens (every position is a real token: no padding).
    batch_size : int
        Samples per forward call.
    progress : bool
        A progress bar over blocks (only when stderr is a terminal).
    device : torch.device or str, optional
        Loaded model only: where blocks run and states live; default the device of the input
        embeddings. Blocks held elsewhere are moved there for their turn and back.
    blocks : nn.ModuleList, optional
        Loaded model only: the decoder blocks its forward calls, in order (default:
        :func:`miprun.models.blocks.find_blocks`).

    Yields
    ------
    b : int
        ``0..T``.
    h_b : Tensor, shape (n_samples, seq_len, d)
        In the blocks' output dtype, on the device where block ``b - 1`` ran (``h_0``: where
        block 0 runs); for one compute device, on it. ``h_0`` is the input of block 0 (the
        embedding output), ``h_{i+1}`` the output of block ``i``; ``h_T`` is taken BEFORE the
        final norm. The tensor is fresh for every ``b``: keeping a reference to it is safe.
    """
    _check_input_ids(input_ids)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(source, nn.Module):
        source = InMemorySource(source, device=device, blocks=blocks)
    elif device is not None or blocks is not None:
        raise ValueError("device= and blocks= apply to a loaded model only; a block source has its own "
                         "(give them to open_source)")
    elif not all(hasattr(source, h) for h in _HOOKS):
        raise ValueError(f"source must be a loaded model or a BlockSource (see miprun.hidden.sources.open_source), "
                         f"got {type(source).__name__}")
    return _states(source, input_ids, batch_size, progress)


def _check_input_ids(input_ids) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
        got = (tuple(input_ids.shape), input_ids.dtype) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a LongTensor of shape (n_samples, seq_len), got {got}")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids is empty: shape {tuple(input_ids.shape)}")


def _states(source: BlockSource, input_ids: torch.Tensor, batch_size: int,
            progress: bool) -> Iterator[tuple[int, torch.Tensor]]:
    bar = None
    try:
        source.enter_capture()
        try:
            with torch.inference_mode():
                h, calls = capture_block_args(source.model, source.blocks, input_ids, batch_size, source.device,
                                              input_device=source.input_device)
        finally:
            source.leave_capture()
        yield 0, h  # (n_samples, seq_len, d)
        bar = progress_bar(source.num_blocks, progress, desc=source.description)
        moved: dict = {}
        for i, block in enumerate(source.blocks):
            dev = source.block_device(i)
            here = calls[i] if dev == source.device else _calls_on(calls[i], dev, moved)
            source.enter_block(i)
            try:
                with torch.inference_mode():
                    h = run_block(block, h if h.device == dev else h.to(dev), here)
            finally:
                source.leave_block(i)
            calls[i] = []  # this block's arguments are no longer needed
            bar.update(1)
            yield i + 1, h
    finally:
        if bar is not None:
            bar.close()
        source.close()


def _calls_on(calls: list, dev: torch.device, moved: dict) -> list:
    """A block's captured ``(rows, args, kwargs)`` with every tensor on ``dev``.

    Blocks share argument sets (one mask for many blocks), so each set is moved once per
    device: ``moved`` maps ``(id(kwargs), dev)`` to the original (kept alive so that its id
    stays unique) and its moved copies.
    """
    out = []
    for rows, args, kwargs in calls:
        key = (id(kwargs), dev)
        if key not in moved:
            moved[key] = (kwargs, move_to(args, dev), move_to(kwargs, dev))
        out.append((rows, *moved[key][1:]))
    return out
