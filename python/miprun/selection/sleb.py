"""SLEB's search (Song et al., 2024, arXiv 2402.09025): remove one block at a time by measured loss.

At every step each block still in the model is tried: the model with the blocks removed so
far plus that one is run on calibration tokens, and the block whose removal gives the
lowest loss goes. ``num_remove`` steps over ``T, T-1, ...`` candidates: ``O(T * N)``
forward passes. The loss is a callable, so this stage never sees a model:
``loss(removed) -> float`` with ``removed`` a sorted tuple of block indices (SLEB ranks by
perplexity, ``exp`` of the mean cross-entropy: the same order).
"""

from __future__ import annotations

import math
import time
from typing import Callable

from miprun.selection.plan import Plan

__all__ = ["Loss", "sleb"]

#: ``loss(removed) -> float``: the calibration loss of the model with the blocks ``removed`` bypassed.
Loss = Callable[[tuple[int, ...]], float]


def sleb(loss: Loss, num_blocks: int, num_remove: int) -> Plan:
    """Remove ``num_remove`` of ``num_blocks`` blocks greedily by measured loss (SLEB).

    Parameters
    ----------
    loss : callable
        ``loss(removed) -> float``, ``removed`` a sorted tuple of block indices; lower is
        better. Called once per distinct candidate set.
    num_blocks, num_remove : int
        Depth of the model; blocks to remove (already checked by the caller).

    Returns
    -------
    Plan
        ``selector="sleb"``, ``evaluations`` = forward passes (loss calls), ``objective``
        None (set by :func:`miprun.select` from a table, when one is given), ``trace``:
        one ``{"kind": "step", "step", "removed_block", "loss", "candidates": [{"block",
        "loss"}, ...]}`` per step, then ``{"kind": "summary", "forward_passes", "seconds",
        "loss"}``. Ties go to the lower block index.
    """
    t = time.perf_counter()
    removed: list[int] = []
    calls: dict[tuple[int, ...], float] = {}
    trace: list[dict] = []
    for step in range(1, num_remove + 1):
        candidates = []
        for b in range(num_blocks):
            if b in removed:
                continue
            key = tuple(sorted(removed + [b]))
            if key not in calls:
                calls[key] = float(loss(key))
            candidates.append({"block": b, "loss": calls[key]})
        # NaN never wins: a candidate whose loss is not a number ranks last
        best = min(candidates, key=lambda c: (math.isnan(c["loss"]), c["loss"], c["block"]))
        removed.append(best["block"])
        trace.append({"kind": "step", "step": step, "removed_block": best["block"], "loss": best["loss"],
                      "candidates": candidates})
    trace.append({"kind": "summary", "forward_passes": len(calls), "seconds": time.perf_counter() - t,
                  "loss": trace[-1]["loss"]})
    return Plan(removed=removed, num_blocks=num_blocks, selector="sleb", evaluations=len(calls), objective=None,
                trace=trace)
