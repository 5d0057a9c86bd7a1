"""Hidden states block by block: the layer-by-layer calibration loop of SparseGPT and Wanda, once for every use.

The model's own forward runs once per batch only up to its blocks: each block's ``forward``
is briefly replaced by a catcher that records its arguments (every block's, because some
families give blocks different masks or rotary tables: sliding vs full attention in
Gemma 2/3 and Qwen2/3) and passes its input through; the last catcher stops the forward.
Then one block at a time runs over all batches. No KV cache is built.

:class:`Sweep` is that loop, the one every stage uses: scoring draws one state per block
(:func:`iter_hidden_states`), the measurer runs each block on one state per distinct plan
prefix, the heal on the unpruned and the healed stream. Each block's weights are made ready
once per sweep, whatever the number of states run through it. Where the weights come from is
the :class:`~miprun.hidden.sources.BlockSource`'s business (a loaded model, the safetensors
shards, an accelerate device map); the sweep calls its hooks around the capture and around
each block.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from miprun.hidden.capture import capture_block_args, move_to, run_block
from miprun.hidden.in_memory import InMemorySource
from miprun.util.progress import progress_bar

if TYPE_CHECKING:
    from miprun.hidden.sources import BlockSource

__all__ = ["iter_hidden_states", "Sweep", "BlockTurn", "as_source"]

_HOOKS = ("enter_capture", "leave_capture", "block_device", "enter_block", "leave_block", "close")


def as_source(source, *, device=None, blocks: nn.ModuleList | None = None) -> "BlockSource":
    """A block source for ``source``: a loaded model is wrapped in an :class:`InMemorySource`, a source kept."""
    if isinstance(source, nn.Module):
        return InMemorySource(source, device=device, blocks=blocks)
    if device is not None or blocks is not None:
        raise ValueError("device= and blocks= apply to a loaded model only; a block source has its own "
                         "(give them to open_source)")
    if not all(hasattr(source, h) for h in _HOOKS):
        raise ValueError(f"source must be a loaded model or a BlockSource (see miprun.hidden.sources.open_source), "
                         f"got {type(source).__name__}")
    return source


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
    check_input_ids(input_ids)
    check_batch_size(batch_size)
    return _states(as_source(source, device=device, blocks=blocks), input_ids, batch_size, progress)


def check_input_ids(input_ids) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
        got = (tuple(input_ids.shape), input_ids.dtype) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a LongTensor of shape (n_samples, seq_len), got {got}")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids is empty: shape {tuple(input_ids.shape)}")


def check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _states(source: BlockSource, input_ids: torch.Tensor, batch_size: int,
            progress: bool) -> Iterator[tuple[int, torch.Tensor]]:
    with Sweep(source, input_ids, batch_size=batch_size, progress=progress) as sweep:
        h = sweep.h0
        yield 0, h  # (n_samples, seq_len, d)
        for turn in sweep.blocks():
            h = turn.run(h)
            turn.close()  # the block's weights go before the caller works on its output
            yield turn.index + 1, h


class Sweep:
    """One pass over a source's blocks: ``h_0`` and every block's arguments captured, then each block in turn.

    Use as a context manager; :meth:`blocks` yields a :class:`BlockTurn` per block, with the
    block's weights ready for as many :meth:`BlockTurn.run` calls as the caller needs (one
    state, or one per plan prefix), and released when the caller moves on. Leaving the
    context (also early, or on error) closes the source.

    Parameters
    ----------
    source : BlockSource
    input_ids : LongTensor (n, seq_len)
        The windows every state of this sweep holds (no padding).
    batch_size : int
        Windows per block call.
    progress : bool
        A progress bar over blocks.
    desc : str, optional
        Its label (default: the source's).
    """

    def __init__(self, source: "BlockSource", input_ids: torch.Tensor, *, batch_size: int = 8,
                 progress: bool = False, desc: str | None = None):
        check_input_ids(input_ids)
        check_batch_size(batch_size)
        self.source, self.input_ids, self.batch_size = source, input_ids, batch_size
        self.progress, self.desc = progress, desc
        self.h0: torch.Tensor | None = None
        self._calls: list | None = None
        self._bar = None
        self._moved: dict = {}

    def __enter__(self) -> "Sweep":
        source = self.source
        try:
            source.enter_capture()
            try:
                with torch.inference_mode():
                    self.h0, self._calls = capture_block_args(source.model, source.blocks, self.input_ids,
                                                              self.batch_size, source.device,
                                                              input_device=source.input_device)
            finally:
                source.leave_capture()
        except BaseException:
            source.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
        self._moved.clear()
        self.source.close()

    def blocks(self, stop: int | None = None) -> Iterator["BlockTurn"]:
        """Blocks ``0 .. stop - 1`` (default all) in order, each made ready for its turn."""
        source = self.source
        stop = source.num_blocks if stop is None else stop
        self._bar = progress_bar(stop, self.progress, desc=self.desc or source.description)
        for i in range(stop):
            dev = source.block_device(i)
            calls = self._calls[i] if dev == source.device else self._calls_on(self._calls[i], dev)
            source.enter_block(i)
            turn = BlockTurn(i, source.blocks[i], dev, calls, leave=source.leave_block, batch_rows=self.batch_size)
            try:
                yield turn
            finally:
                turn.close()
            self._calls[i] = []  # this block's arguments are no longer needed
            self._bar.update(1)

    def _calls_on(self, calls: list, dev: torch.device) -> list:
        """A block's captured ``(rows, args, kwargs)`` with every tensor on ``dev``.

        Blocks share argument sets (one mask for many blocks), so each set is moved once per
        device: ``_moved`` maps ``(id(kwargs), dev)`` to the original (kept alive so that its
        id stays unique) and its moved copies.
        """
        out = []
        for rows, args, kwargs in calls:
            key = (id(kwargs), dev)
            if key not in self._moved:
                self._moved[key] = (kwargs, move_to(args, dev), move_to(kwargs, dev))
            out.append((rows, *self._moved[key][1:]))
        return out


class BlockTurn:
    """One block's turn in a :class:`Sweep`: run it over any state of the sweep's windows.

    Attributes
    ----------
    index : int
        The block's index ``i`` (its input is ``h_i``).
    block : nn.Module
    device : torch.device
        Where it computes; states are moved there.
    """

    def __init__(self, index: int, block: nn.Module, device: torch.device, calls: list, leave=None,
                 batch_rows: int = 1):
        self.index, self.block, self.device, self._calls = index, block, device, calls
        self._leave, self.batch_rows = leave, batch_rows
        self._packed: dict[int, tuple] = {}

    def close(self) -> None:
        """The block is done for this sweep: its weights are released now (else when the sweep moves on)."""
        if self._leave is not None:
            leave, self._leave = self._leave, None
            leave(self.index)

    def run(self, h: torch.Tensor, *, capture: str | None = None):
        """The block over every window of ``h`` (n, seq_len, d): a new tensor of the same shape.

        With ``capture`` (a dotted module path inside the block), also the output of that
        module over the same windows, as ``(out, part)`` (e.g. the MLP output a heal maps).
        """
        h = h if h.device == self.device else h.to(self.device)
        if capture is None:
            with torch.inference_mode():
                return run_block(self.block, h, self._calls)
        parts: list[torch.Tensor] = []

        def grab(module, args, output):
            parts.append(output[0] if isinstance(output, tuple) else output)

        handle = operator.attrgetter(capture)(self.block).register_forward_hook(grab)
        try:
            with torch.inference_mode():
                out = run_block(self.block, h, self._calls)
        finally:
            handle.remove()
        return out, torch.cat(parts).reshape(out.shape)

    def run_many(self, states: list[torch.Tensor]) -> list[torch.Tensor]:
        """The block over several states of the sweep's windows, their windows packed into full batches.

        States of fewer windows than a batch (a screening measurement's few windows, one state
        per candidate) would each make a small call; packed, the calls are as large as the
        capture's batches. Packing needs arguments that do not differ between windows (masks,
        positions and rotary tables of unpadded windows); where they differ, or a state fills a
        batch already, each state runs on its own. Equal to :meth:`run` of each state.
        """
        rows = states[0].shape[0] if states else 0
        if len(states) < 2 or rows >= self.batch_rows or not self._uniform():
            return [self.run(h) for h in states]
        states = [h if h.device == self.device else h.to(self.device) for h in states]
        flat = [(k, r) for k in range(len(states)) for r in range(rows)]  # (state, window) of every row
        outs = [torch.empty_like(h) for h in states]
        with torch.inference_mode():
            for lo in range(0, len(flat), self.batch_rows):
                chunk = flat[lo:lo + self.batch_rows]
                x = torch.stack([states[k][r] for k, r in chunk])  # (rows of the chunk, seq_len, d)
                args, kwargs = self._args_for(len(chunk))
                y = self.block(x, *args, **kwargs)
                y = y[0] if isinstance(y, (tuple, list)) else y
                for j, (k, r) in enumerate(chunk):
                    outs[k][r] = y[j]
        return outs

    def _uniform(self) -> bool:
        """Whether every window of every captured batch gets the same arguments (so rows can be packed)."""
        return all(_same_rows(args, _rows(rows)) and _same_rows(kwargs, _rows(rows))
                   for rows, args, kwargs in self._calls)

    def _args_for(self, n: int) -> tuple:
        """The first batch's arguments for ``n`` windows: each per-window tensor's first row, ``n`` times."""
        if n not in self._packed:
            rows, args, kwargs = self._calls[0]
            self._packed[n] = (_repeat_rows(args, _rows(rows), n), _repeat_rows(kwargs, _rows(rows), n))
        return self._packed[n]


def _rows(rows: slice) -> int:
    return rows.stop - rows.start


def _per_window(t, rows: int) -> bool:
    """A tensor argument with one entry per window of its batch (a 1-D one is a per-position vector)."""
    return isinstance(t, torch.Tensor) and t.ndim >= 2 and t.shape[0] == rows


def _same_rows(obj, rows: int) -> bool:
    if _per_window(obj, rows):
        return bool(torch.equal(obj, obj[:1].expand_as(obj)))
    if isinstance(obj, (tuple, list)):
        return all(_same_rows(o, rows) for o in obj)
    if isinstance(obj, dict):
        return all(_same_rows(o, rows) for o in obj.values())
    return True


def _repeat_rows(obj, rows: int, n: int):
    if _per_window(obj, rows):
        return obj[:1].expand(n, *obj.shape[1:]).contiguous()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_repeat_rows(o, rows, n) for o in obj)
    if isinstance(obj, dict):
        return {k: _repeat_rows(v, rows, n) for k, v in obj.items()}
    return obj
