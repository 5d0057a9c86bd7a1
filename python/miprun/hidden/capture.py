"""Running decoder blocks one at a time over captured inputs (the SparseGPT/Wanda calibration loop).

:func:`capture_block_args` runs a model's own forward once per batch, only up to its
blocks, and records what every block receives (hidden state, mask, rotary tables, positions);
:func:`run_block` then runs one block over all batches. The blocks themselves never run
during the capture, so their weights may still be on the meta device: streaming
(:mod:`miprun.hidden.stream`) and device maps (:mod:`miprun.hidden.device_map`) rely on this.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["capture_block_args", "run_block", "move_to"]


class _StopForward(Exception):
    """Raised by the last block's catcher: the rest of the model's forward is not needed."""


def _same(a, b) -> bool:
    """Deep equality of captured forward arguments (tensors compared by value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a is b or (type(a) is type(b) and isinstance(a, (int, float, bool, str)) and a == b)


def capture_block_args(model: nn.Module, blocks: nn.ModuleList, input_ids: torch.Tensor, batch_size: int,
                       device: torch.device, input_device: torch.device | None = None):
    """Run the model's forward up to its blocks for every batch; return ``h_0`` and every block's arguments.

    Each block's ``forward`` is replaced, for the duration, by a catcher that records its
    arguments and passes the hidden state through; the last one stops the forward. Every
    block's arguments are kept, not just block 0's, because some families give blocks
    different masks or rotary tables (sliding vs full attention in Gemma 2/3, Qwen2/3).

    ``input_device`` is where the token ids go for the model's forward (the embedding's
    device; default ``device``); everything captured is moved to ``device``.

    Returns
    -------
    h0 : Tensor, shape (n_samples, seq_len, d)
        Block 0's input hidden states, on ``device``.
    calls : list over blocks of list over batches of (slice, tuple, dict)
        The batch's rows, the positional arguments after the hidden state, and the keyword
        arguments (rotary cos/sin, mask, positions). Equal arguments share one object, so a
        mask is stored once however many blocks and batches use it.
    """
    n = input_ids.shape[0]
    num_blocks = len(blocks)
    calls: list[list] = [[] for _ in range(num_blocks)]
    distinct: list = []  # the few different argument sets seen so far
    h0 = None
    rows = slice(0, 0)

    def catcher(i: int):
        def forward(*args, **kwargs):
            nonlocal h0
            if args:
                hidden, rest = args[0], (tuple(args[1:]), dict(kwargs))
            elif "hidden_states" in kwargs:
                rest_kwargs = dict(kwargs)
                hidden, rest = rest_kwargs.pop("hidden_states"), ((), rest_kwargs)
            else:
                raise ValueError(f"block {i} was called without a hidden-state argument (keywords: {sorted(kwargs)})")
            rest = move_to(rest, device)
            for seen in distinct:
                if _same(seen, rest):
                    rest = seen
                    break
            else:
                distinct.append(rest)
            calls[i].append((rows, *rest))
            if i == 0:
                if h0 is None:
                    h0 = torch.empty((n, *hidden.shape[1:]), dtype=hidden.dtype, device=device)
                h0[rows] = hidden
            if i == num_blocks - 1:
                raise _StopForward
            return hidden
        return forward

    saved = [blk.__dict__.get("forward") for blk in blocks]
    try:
        for i, blk in enumerate(blocks):
            blk.forward = catcher(i)
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            try:
                model(input_ids=input_ids[rows].to(input_device or device), use_cache=False)
            except _StopForward:
                pass
            else:
                raise RuntimeError(f"{type(model).__name__}'s forward did not reach its last block")
    finally:
        for blk, fwd in zip(blocks, saved):
            if fwd is None:
                blk.__dict__.pop("forward", None)
            else:
                blk.forward = fwd
    return h0, calls


def move_to(obj, device: torch.device):
    """Every tensor inside ``obj`` (tuples, lists, dicts) on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(move_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    return obj


def run_block(block: nn.Module, h: torch.Tensor, calls) -> torch.Tensor:
    """Run one block over all batches of ``h`` (n_samples, seq_len, d); a new tensor of the same shape.

    ``calls`` holds, per batch, ``(rows, args, kwargs)`` as recorded by :func:`capture_block_args`.
    """
    out = torch.empty_like(h)
    for rows, args, kwargs in calls:
        y = block(h[rows], *args, **kwargs)
        out[rows] = y[0] if isinstance(y, (tuple, list)) else y
    return out
