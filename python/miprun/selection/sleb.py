"""SLEB's search (Song et al., 2024, arXiv 2402.09025): remove one block at a time by measured loss.

At every step each block still in the model is tried: the model with the blocks removed so
far plus that one is measured, and the block whose removal gives the lowest value goes.
``num_remove`` steps over ``T, T-1, ...`` candidates. Each step's candidates are one batch
of the measurer: one sweep over the weights per step, the candidates sharing every block
before the one they remove. This stage never sees a model (SLEB ranks by perplexity,
``exp`` of the mean cross-entropy: the order of the ``loss`` criterion).
"""

from __future__ import annotations

import time

from miprun.selection.measured import Measured
from miprun.selection.plan import Plan

__all__ = ["sleb"]


def sleb(measure, num_blocks: int, num_remove: int, *, criterion: str = "loss") -> Plan:
    """Remove ``num_remove`` of ``num_blocks`` blocks greedily by measured value (SLEB).

    Parameters
    ----------
    measure : Measurer, callable or Measured
        A :class:`miprun.measure.Measurer`, a ``loss(removed) -> float`` callable, or a
        :class:`~miprun.selection.measured.Measured` shared with other searches.
    num_blocks, num_remove : int
        Depth of the model; blocks to remove, ``1 <= num_remove < num_blocks``.
    criterion : {"loss", "kl"}
        What a measurer's measurements are ranked by (default ``loss``, SLEB's own).

    Returns
    -------
    Plan
        ``selector="sleb"``, ``evaluations`` = plans measured, ``objective`` None, ``trace``:
        one ``{"kind": "step", "step", "removed_block", "value", "candidates": [{"block",
        "value"}, ...]}`` per step, then ``{"kind": "summary", "plans_measured", "requests",
        "seconds", "value", "criterion"}``. Ties go to the lower block index.
    """
    for name, value, low, high in (("num_blocks", num_blocks, 2, None), ("num_remove", num_remove, 1, num_blocks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value >= high):
            raise ValueError(f"{name}={value!r} is out of range: remove between 1 and num_blocks - 1 blocks")
    measured = measure if isinstance(measure, Measured) else Measured(measure, criterion=criterion)
    t = time.perf_counter()
    before, requests = measured.plans_measured, measured.requests
    removed: list[int] = []
    trace: list[dict] = []
    for step in range(1, num_remove + 1):
        left = [b for b in range(num_blocks) if b not in removed]
        values = measured([removed + [b] for b in left])
        candidates = [{"block": b, "value": v} for b, v in zip(left, values)]
        best = min(candidates, key=lambda c: (c["value"], c["block"]))  # NaN was measured as +inf: never wins
        removed.append(best["block"])
        trace.append({"kind": "step", "step": step, "removed_block": best["block"], "value": best["value"],
                      "candidates": candidates})
    measured_now = measured.plans_measured - before
    trace.append({"kind": "summary", "plans_measured": measured_now, "requests": measured.requests - requests,
                  "seconds": time.perf_counter() - t, "value": trace[-1]["value"], "criterion": measured.criterion})
    return Plan(removed=removed, num_blocks=num_blocks, selector="sleb", evaluations=measured_now, objective=None,
                trace=trace)
