"""Swap refinement: improve the verified plan by measured one-block swaps along its runs.

``verify`` picks the best of a few plans the scores propose; the plans that win by measured
loss (SLEB's) often differ from the best proposal by a block or two at the edge of a run:
on Gemma-3 the Gaussian Fast-Block-Select plan [8, 9, 14, 15, 16] against SLEB's
[7, 8, 9, 14, 15]. A round of refinement measures, from the current plan ``P`` (loss
``l(P)``):

- ``l(P + c)`` for every kept block ``c`` next to one of ``P``'s runs (at most two per run):
  how cheaply a run grows there;
- ``l(P - b)`` for every removed block ``b``: how much putting ``b`` back helps;

then estimates every swap ``P - b + c`` by ``l(P + c) + l(P - b) - l(P)`` (the two changes
taken as additive), measures the ``swaps`` best estimates, and moves to the best measured
swap if it beats ``l(P)``; otherwise it stops. A round costs ``|adjacent| + N + swaps``
loss passes (at most ``2 * runs + N + swaps``), each over the held-back windows ``verify``
uses. Plans already measured are not measured again.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from miprun.selection.plan import runs_of

__all__ = ["refine", "SWAPS"]

#: Swaps measured per round, best estimate first.
SWAPS = 2


def refine(removed, loss: Callable[[tuple[int, ...]], float], num_blocks: int, rounds: int, *,
           known: dict[tuple[int, ...], float] | None = None, swaps: int = SWAPS) -> tuple[list[int], dict]:
    """Up to ``rounds`` rounds of measured swaps from ``removed`` (module docstring).

    Parameters
    ----------
    removed : sequence of int
        The starting plan (verify's choice).
    loss : callable
        ``loss(removed) -> float`` on a sorted tuple, as ``verify`` measures.
    num_blocks : int
        Depth of the model.
    rounds : int
        Rounds at most (each ends with a move or stops the search).
    known : dict, optional
        Losses already measured, by sorted tuple (verify's candidates); not measured again.
    swaps : int
        Swaps measured per round.

    Returns
    -------
    (list of int, dict)
        The refined plan (sorted) and the trace entry ``{"kind": "refine", "rounds": [...],
        "forward_passes", "seconds", "start", "loss"}``; each round lists the measured
        growths (``add``), put-backs (``drop``), swaps and whether it moved.
    """
    t0 = time.perf_counter()
    cache: dict[tuple[int, ...], float] = dict(known or {})
    passes = 0

    def measure(blocks) -> float:
        nonlocal passes
        key = tuple(sorted(int(b) for b in blocks))
        if key not in cache:
            cache[key] = float(loss(key))
            passes += 1
        value = cache[key]
        return math.inf if math.isnan(value) else value

    plan = sorted(int(b) for b in removed)
    current = measure(plan)
    trace = {"kind": "refine", "start": list(plan), "start_loss": current, "rounds": []}
    for _ in range(rounds):
        gone = set(plan)
        ends = [e for s, n in runs_of(plan) for e in (s - 1, s + n)]  # the kept blocks on either side of each run
        adjacent = sorted({e for e in ends if 0 <= e < num_blocks and e not in gone})
        if not adjacent:
            break
        add = {c: measure(plan + [c]) for c in adjacent}
        drop = {b: measure([x for x in plan if x != b]) for b in plan}
        estimates = sorted((add[c] + drop[b] - current, b, c) for b in plan for c in adjacent)
        tried: list[dict] = []
        for _, b, c in estimates:
            if len(tried) >= swaps:
                break
            candidate = sorted([x for x in plan if x != b] + [c])
            if any(t["removed"] == candidate for t in tried):
                continue
            tried.append({"removed": candidate, "put_back": b, "added": c, "loss": measure(candidate)})
        best = min(tried, key=lambda t: t["loss"], default=None)
        moved = best is not None and best["loss"] < current
        trace["rounds"].append({"from": list(plan), "loss": current, "add": {str(c): v for c, v in add.items()},
                                "drop": {str(b): v for b, v in drop.items()}, "swaps": tried, "moved": moved})
        if not moved:
            break
        plan, current = best["removed"], best["loss"]
    trace.update({"removed": list(plan), "loss": current, "forward_passes": passes,
                  "seconds": time.perf_counter() - t0})
    return plan, trace
