"""Swap refinement: improve the verified plan by measured one-block swaps along its runs.

``verify`` picks the best of a few plans the scores propose; the plans that win by measured
loss (SLEB's) often differ from the best proposal by a block or two at the edge of a run:
on Gemma-3 the Gaussian Fast-Block-Select plan [8, 9, 14, 15, 16] against SLEB's
[7, 8, 9, 14, 15]. A round of refinement measures, from the current plan ``P`` (value
``l(P)``), in one batch:

- ``l(P + c)`` for every kept block ``c`` next to one of ``P``'s runs (at most two per run):
  how cheaply a run grows there;
- ``l(P - b)`` for every removed block ``b``: how much putting ``b`` back helps;

then estimates every swap ``P - b + c`` by ``l(P + c) + l(P - b) - l(P)`` (the two changes
taken as additive), measures the ``swaps`` best estimates in a second batch, and moves to
the best measured swap if it beats ``l(P)``; otherwise it stops. With ``screen``, the first
batch is measured on the measurer's screening windows (the estimates only rank the swaps);
the swaps and ``l(P)`` they must beat are always measured on all windows. Plans already
measured (by verify, or an earlier round) are not measured again.
"""

from __future__ import annotations

import time

from miprun.selection.measured import Measured
from miprun.selection.plan import runs_of

__all__ = ["refine", "SWAPS"]

#: Swaps measured per round, best estimate first.
SWAPS = 2


def refine(removed, measured: Measured, num_blocks: int, rounds: int, *, swaps: int = SWAPS,
           screen: bool = False) -> tuple[list[int], dict]:
    """Up to ``rounds`` rounds of measured swaps from ``removed`` (module docstring).

    Parameters
    ----------
    removed : sequence of int
        The starting plan (verify's choice).
    measured : Measured
        The criterion, shared with verify (its cache serves plans measured there).
    num_blocks : int
        Depth of the model.
    rounds : int
        Rounds at most (each ends with a move or stops the search).
    swaps : int
        Swaps measured per round.
    screen : bool
        Measure the growths and put-backs on the screening windows.

    Returns
    -------
    (list of int, dict)
        The refined plan (sorted) and the trace entry ``{"kind": "refine", "rounds": [...],
        "plans_measured", "seconds", "start", "value"}``; each round lists the measured
        growths (``add``), put-backs (``drop``), swaps and whether it moved.
    """
    t0 = time.perf_counter()
    before = measured.plans_measured
    plan = sorted(int(b) for b in removed)
    current = measured.one(plan)
    trace = {"kind": "refine", "start": list(plan), "start_value": current, "screen": screen, "rounds": []}
    for _ in range(rounds):
        step = _round(plan, current, measured, num_blocks, swaps, screen)
        if step is None:
            break
        trace["rounds"].append(step)
        if not step["moved"]:
            break
        plan, current = step["to"], step["to_value"]
    trace.update({"removed": list(plan), "value": current, "plans_measured": measured.plans_measured - before,
                  "seconds": time.perf_counter() - t0})
    return plan, trace


def _round(plan: list[int], current: float, measured: Measured, num_blocks: int, swaps: int,
           screen: bool) -> dict | None:
    """One round: growths and put-backs in one batch, then the best estimated swaps in another."""
    gone = set(plan)
    ends = [e for s, n in runs_of(plan) for e in (s - 1, s + n)]  # the kept blocks on either side of each run
    adjacent = sorted({e for e in ends if 0 <= e < num_blocks and e not in gone})
    if not adjacent:
        return None
    grown = [plan + [c] for c in adjacent]
    shrunk = [[x for x in plan if x != b] for b in plan]
    values = measured(grown + shrunk + [plan], screen=screen)
    add = dict(zip(adjacent, values[:len(grown)]))
    drop = dict(zip(plan, values[len(grown):-1]))
    base = values[-1]  # l(P) on the same windows as the estimates
    estimates = sorted((add[c] + drop[b] - base, b, c) for b in plan for c in adjacent)
    tried: list[dict] = []
    for _, b, c in estimates:
        if len(tried) >= swaps:
            break
        candidate = sorted([x for x in plan if x != b] + [c])
        if all(t["removed"] != candidate for t in tried):
            tried.append({"removed": candidate, "put_back": b, "added": c})
    for t, value in zip(tried, measured([t["removed"] for t in tried])):
        t["value"] = value
    best = min(tried, key=lambda t: t["value"], default=None)
    moved = best is not None and best["value"] < current
    return {"from": list(plan), "value": current, "add": {str(c): v for c, v in add.items()},
            "drop": {str(b): v for b, v in drop.items()}, "swaps": tried, "moved": moved,
            "to": best["removed"] if moved else list(plan), "to_value": best["value"] if moved else current}
