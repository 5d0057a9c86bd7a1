"""Hidden states block by block: the layer-by-layer calibration loop of SparseGPT and Wanda.

The model's own forward runs once per batch only up to its blocks: each block's ``forward``
is briefly replaced by a catcher that records its arguments (every block's, because some
families give blocks different masks or rotary tables: sliding vs full attention in
Gemma 2/3 and Qwen2/3) and passes its input through; the last catcher stops the forward.
Then one block at a time runs over all batches, its outputs becoming the next block's
inputs. Only the current state is kept, and no KV cache is built.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from miprun.hidden.capture import capture_block_args, run_block
from miprun.util.progress import progress_bar

__all__ = ["iter_hidden_states", "compute_device"]


def compute_device(model: nn.Module, device=None) -> torch.device:
    """``device`` if given, else the device of the model's input embedding weights."""
    if device is not None:
        return torch.device(device)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


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
        from miprun.models.blocks import find_blocks
        blocks = find_blocks(model)[0]
    dev = compute_device(model, device)
    home = compute_device(model, None)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            state, calls = capture_block_args(model, blocks, input_ids, batch_size, dev, input_device=home)
        yield 0, state  # (n_samples, seq_len, d)
        bar = progress_bar(len(blocks), progress)
        try:
            for i, blk in enumerate(blocks):
                with torch.inference_mode():
                    state = _run_block(blk, state, calls[i], dev)
                calls[i] = []  # this block's arguments are no longer needed
                bar.update(1)
                yield i + 1, state
        finally:
            bar.close()
    finally:
        model.train(was_training)


def _run_block(blk: nn.Module, state: torch.Tensor, calls: list, dev: torch.device) -> torch.Tensor:
    """Run one block over all batches of ``state: (n, s, d)``, moving it to ``dev`` for its turn."""
    block_home = next(blk.parameters(), torch.empty(0, device=dev)).device
    moved = block_home != dev
    if moved:
        blk.to(dev)
    try:
        return run_block(blk, state, calls)
    finally:
        if moved:
            blk.to(block_home)
