"""Calibration loss of a loaded model with some of its blocks bypassed, one full forward pass per plan.

:class:`CalibrationLoss` is a ``loss(removed) -> float``: the mean next-token cross-entropy
(nats per token) of the model on calibration windows, with the blocks ``removed`` swapped,
for the duration of one measurement, for a module that returns its input hidden states
(:class:`~miprun.hidden.bypass.bypassed`, the model that
:func:`miprun.output.surgery.remove_blocks` makes, without its surgery). The model is
restored afterwards, also on error; nothing is copied. It is the plain reference the
measurer (:class:`miprun.measure.Measurer`, many plans per sweep) is tested against; the
searches (:func:`miprun.selection.verify.verify`, :func:`miprun.selection.sleb.sleb`) take
either.
"""

from __future__ import annotations

import math
import time
from typing import Iterable

import torch
from torch import nn

from miprun.hidden.bypass import BypassedBlock, bypassed
from miprun.models.blocks import find_blocks

__all__ = ["CalibrationLoss", "BypassedBlock", "bypassed", "mean_next_token_loss"]


def mean_next_token_loss(model: nn.Module, input_ids: torch.Tensor, *, batch_size: int = 8) -> tuple[float, int]:
    """Mean next-token cross-entropy of ``model`` on windows ``input_ids`` (n, seq_len), and the model calls.

    Every window predicts its tokens ``1..seq_len-1`` from those before them; the logits are
    upcast to at least float32 per window and the losses summed in float64.
    """
    if input_ids.ndim != 2 or input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must be (n_windows, seq_len >= 2), got shape {tuple(input_ids.shape)}")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    total, calls = 0.0, 0
    try:
        with torch.inference_mode():
            for lo in range(0, input_ids.shape[0], batch_size):
                batch = input_ids[lo:lo + batch_size].to(device)
                logits = model(input_ids=batch, use_cache=False).logits
                calls += 1
                for row in range(batch.shape[0]):
                    pred = logits[row, :-1]
                    pred = pred.to(torch.promote_types(pred.dtype, torch.float32))
                    nll = torch.nn.functional.cross_entropy(pred, batch[row, 1:], reduction="sum")
                    total += float(nll.double())
    finally:
        model.train(was_training)
    return total / (input_ids.shape[0] * (input_ids.shape[1] - 1)), calls


class CalibrationLoss:
    """``loss(removed) -> float``: mean next-token cross-entropy with the blocks ``removed`` bypassed.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM of a supported family, loaded in memory; it is only borrowed (each call
        swaps blocks in and restores them).
    input_ids : LongTensor (n_windows, seq_len)
        The calibration windows the loss is measured on (for ``verify``: those held back
        from scoring).
    batch_size : int
        Windows per forward call.

    Attributes
    ----------
    passes : int
        Measurements made (each a pass over every window); repeats are served from the cache.
    calls : int
        Model forward calls (batches) in those passes.
    seconds : float
        Time spent measuring.
    cache : dict
        ``{removed (sorted tuple): loss}``.
    """

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, *, batch_size: int = 8):
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.shape[0] < 1:
            raise ValueError("input_ids must be a (n_windows, seq_len) tensor with at least one window")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.model = model
        self.input_ids = input_ids
        self.batch_size = batch_size
        self.num_blocks = len(find_blocks(model)[0])
        self.cache: dict[tuple[int, ...], float] = {}
        self.passes = 0
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, removed: Iterable[int] = ()) -> float:
        key = tuple(sorted({int(b) for b in removed}))
        if key in self.cache:
            return self.cache[key]
        t = time.perf_counter()
        with bypassed(self.model, key):
            value, calls = mean_next_token_loss(self.model, self.input_ids, batch_size=self.batch_size)
        self.seconds += time.perf_counter() - t
        self.passes += 1
        self.calls += calls
        self.cache[key] = value
        return value

    def summary(self) -> dict:
        """What the measurements cost, for the report."""
        return {"windows": int(self.input_ids.shape[0]), "seq_len": int(self.input_ids.shape[1]),
                "forward_passes": self.passes, "model_calls": self.calls, "seconds": self.seconds,
                "full_model_loss": self.cache.get(()), "perplexity_of": "exp(loss)",
                "finite": all(math.isfinite(v) for v in self.cache.values())}
