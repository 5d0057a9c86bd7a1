"""Hidden states block by block: the layer-by-layer calibration loop of SparseGPT and Wanda.

The model's own forward runs once per batch only up to its blocks: each block's ``forward``
is briefly replaced by a catcher that records its arguments (every block's, because some
families give blocks different masks or rotary tables: sliding vs full attention in
Gemma 2/3 and Qwen2/3) and passes its input through; the last catcher stops the forward.
Then one block at a time runs over all batches, its outputs becoming the next block's
inputs. Only the current state is kept, and no KV cache is built.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["iter_hidden_states", "compute_device", "progress_enabled"]


class _StopForward(Exception):
    """Raised by the last catcher: the rest of the model's forward is not needed."""


def progress_enabled(progress: bool) -> bool:
    """Progress bars only when asked for and when stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()


def compute_device(model: nn.Module, device=None) -> torch.device:
    """``device`` if given, else the device of the model's input embedding weights."""
    if device is not None:
        return torch.device(device)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


def _move(obj: Any, device: torch.device) -> Any:
    """Move every tensor inside ``obj`` (tuples, lists, dicts) to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=device.type == "cuda")  # host reads must wait for copies
    if isinstance(obj, tuple):
        return tuple(_move(o, device) for o in obj)
    if isinstance(obj, list):
        return [_move(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def _same(a: Any, b: Any) -> bool:
    """Structural equality of captured arguments (tensors compared by value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a is b or (type(a) is type(b) and isinstance(a, (int, float, str, bool, type(None))) and a == b)


def _hidden_of(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple, dict]:
    """Split a block call into its hidden-state input and the remaining arguments."""
    if args:
        return args[0], args[1:], kwargs
    if "hidden_states" in kwargs:
        rest = dict(kwargs)
        return rest.pop("hidden_states"), (), rest
    raise ValueError("cannot find the hidden-state input of the first block: it was called without positional "
                     f"arguments and without a 'hidden_states' keyword (keywords: {sorted(kwargs)})")


def _capture(model: nn.Module, blocks: nn.ModuleList, batches: list[torch.Tensor], device: torch.device):
    """Run the model's forward up to its blocks for each batch.

    Returns ``(h0, calls)``: ``h0`` the inputs of block 0 per batch, ``calls[i][j]`` the
    ``(args, kwargs)`` block ``i`` received for batch ``j``, moved to ``device``.
    """
    num_blocks = len(blocks)
    calls: list[list[tuple[tuple, dict]]] = [[] for _ in range(num_blocks)]
    h0: list[torch.Tensor] = []
    state = {"batch": 0}

    def catcher(i: int):
        def forward(*args, **kwargs):
            hidden, rest_args, rest_kwargs = _hidden_of(args, kwargs)
            rest = (_move(rest_args, device), _move(rest_kwargs, device))
            j = state["batch"]
            if j > 0 and _same(rest, calls[i][0]):
                rest = calls[i][0]  # identical arguments for every batch: keep one copy
            calls[i].append(rest)
            if i == 0:
                h0.append(hidden.to(device))
            if i == num_blocks - 1:
                raise _StopForward
            return hidden
        return forward

    saved = [blk.__dict__.get("forward") for blk in blocks]
    try:
        for i, blk in enumerate(blocks):
            blk.forward = catcher(i)
        for j, ids in enumerate(batches):
            state["batch"] = j
            try:
                model(input_ids=ids, use_cache=False)
            except _StopForward:
                pass
            else:
                raise RuntimeError(f"{type(model).__name__}'s forward did not call its last block; "
                                   "cannot collect block inputs")
    finally:
        for blk, fwd in zip(blocks, saved):
            if fwd is None:
                blk.__dict__.pop("forward", None)
            else:
                blk.forward = fwd
    return h0, calls


def iter_hidden_states(model: nn.Module, input_ids: torch.Tensor, *, batch_size: int = 8, device=None,
                       progress: bool = True, blocks: nn.ModuleList | None = None
                       ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield the hidden states ``h_0 .. h_T`` of a causal LM over calibration tokens, one at a time.

    Parameters
    ----------
    model : transformers PreTrainedModel
        A causal LM (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, GPT-2, OPT, GPT-NeoX, ...).
    input_ids : LongTensor, shape (n_samples, seq_len)
        Calibration tokens (every position is a real token: no padding).
    batch_size : int
        Samples per forward call.
    device : torch.device or str, optional
        Where blocks run and states live; default the device of the input embeddings.
        Blocks held elsewhere (e.g. on the CPU) are moved there for their turn and back.
    progress : bool
        A tqdm bar over blocks (only when stderr is a terminal).
    blocks : nn.ModuleList, optional
        The decoder blocks the model's forward calls, in order; found with
        :func:`miprun.surgery.find_blocks` when omitted.

    Yields
    ------
    b : int
        ``0..T``.
    h_b : Tensor, shape (n_samples, seq_len, d)
        On the compute device, in the blocks' output dtype. ``h_0`` is the input of block
        0 (the embedding output), ``h_{i+1}`` the output of block ``i``; ``h_T`` is taken
        BEFORE the final norm. The tensor is fresh for every ``b``: keeping a reference
        to it is safe.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
        got = (tuple(input_ids.shape), input_ids.dtype) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a LongTensor of shape (n_samples, seq_len), got {got}")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids is empty: shape {tuple(input_ids.shape)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if blocks is None:
        from .surgery import find_blocks
        blocks = find_blocks(model)[0]
    dev = compute_device(model, device)
    home = compute_device(model, None)
    was_training = model.training
    model.eval()
    try:
        batches = [input_ids[i:i + batch_size].to(home) for i in range(0, input_ids.shape[0], batch_size)]
        with torch.inference_mode():
            h0, calls = _capture(model, blocks, batches, dev)
            state = torch.cat(h0, 0)  # (n_samples, seq_len, d)
        del h0
        yield 0, state
        bar = _bar(len(blocks), progress)
        try:
            for i, blk in enumerate(blocks):
                with torch.inference_mode():
                    state = _run_block(blk, state, calls[i], batch_size, dev)
                calls[i] = []  # this block's arguments are no longer needed
                bar.update(1)
                yield i + 1, state
        finally:
            bar.close()
    finally:
        model.train(was_training)


def _run_block(blk: nn.Module, state: torch.Tensor, calls: list, batch_size: int, dev: torch.device) -> torch.Tensor:
    """Run one block over all batches of ``state: (n, s, d)``; returns the new state."""
    block_home = next(blk.parameters(), torch.empty(0, device=dev)).device
    moved = block_home != dev
    if moved:
        blk.to(dev)
    try:
        out = None
        for j, (args, kwargs) in enumerate(calls):
            lo = j * batch_size
            hi = min(lo + batch_size, state.shape[0])
            y = blk(state[lo:hi], *args, **kwargs)
            if isinstance(y, (tuple, list)):  # older and remote-code blocks return (hidden, ...)
                y = y[0]
            if out is None:
                out = torch.empty((state.shape[0],) + tuple(y.shape[1:]), dtype=y.dtype, device=dev)
            out[lo:hi] = y
        return out
    finally:
        if moved:
            blk.to(block_home)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, progress: bool):
    if not progress_enabled(progress):
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="blocks", unit="block", leave=False)
