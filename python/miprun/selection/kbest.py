"""The K best plans of the cheap selectors' own objectives, for ``verify`` to measure.

``optimal`` (and ``exhaustive``, the same objective) enumerate exactly with the native
K-best dynamic programme (:func:`miprun._core.optimal_kbest`); this module holds the
others, each best first and each starting with the selector's own plan:

- :func:`kbest_single`: the K subsets of ``num_remove`` blocks with the largest sum of
  single-block scores (``greedy``, ``shortgpt``), exactly, by a best-first search;
- :func:`kbest_fbs`: Fast-Block-Select's K best plans among those its final pass compared:
  one scored candidate run per group of ``P`` (the runs of step 5, the group's own run
  included), no two overlapping (nor touching unless ``allow_touching``), ranked by the
  sum of their actual scores, which is its own step-6 objective. Its final plan, the best
  of that pass, comes first; the enumeration is exact over that pass's candidates (a
  best-first search over one index per group), so it scores no run the search did not;
- :func:`kbest_column`: the K best single runs of ``num_remove`` blocks (``gromov``).
"""

from __future__ import annotations

import heapq
import math
from typing import Sequence

import numpy as np

__all__ = ["kbest_single", "kbest_fbs", "kbest_column"]

#: Best-first states examined at most by :func:`kbest_fbs` (conflicting choices are skipped).
FBS_MAX_STATES = 200_000


def kbest_single(single: np.ndarray, num_remove: int, k: int) -> list[tuple[list[int], float]]:
    """The ``k`` subsets of ``num_remove`` blocks with the largest sums of ``single``, best first.

    Blocks are ranked by score (ties: lower index first), so the first subset is
    :func:`miprun._core.greedy`'s. A subset's successors move one of its blocks to the
    next-ranked block not in it; a successor never sums more than its subset, so popping
    the largest sum first yields the subsets in order (exact, with a visited set).

    Returns
    -------
    list of (removed, sum)
        ``removed`` sorted, in block indices.
    """
    single = np.asarray(single, dtype=np.float64)
    order = sorted(range(len(single)), key=lambda b: (-single[b], b))
    ranked = single[order]
    total = len(single)
    start = tuple(range(num_remove))

    def value(state: tuple[int, ...]) -> float:
        return float(sum(ranked[i] for i in state))

    heap = [(-value(start), start)]
    seen = {start}
    out: list[tuple[list[int], float]] = []
    while heap and len(out) < k:
        neg, state = heapq.heappop(heap)
        out.append((sorted(order[i] for i in state), -neg))
        members = set(state)
        for j, pos in enumerate(state):
            nxt = pos + 1
            if nxt < total and nxt not in members:
                child = tuple(sorted(state[:j] + (nxt,) + state[j + 1:]))
                if child not in seen:
                    seen.add(child)
                    heapq.heappush(heap, (-value(child), child))
    return out


def kbest_column(column: np.ndarray, num_remove: int, k: int) -> list[tuple[list[int], float]]:
    """The ``k`` runs of ``num_remove`` blocks with the largest scores (ties: lower start first)."""
    column = np.asarray(column, dtype=np.float64)
    starts = sorted(range(len(column)), key=lambda s: (-column[s], s))[:k]
    return [(list(range(s, s + num_remove)), float(column[s])) for s in starts]


def kbest_fbs(groups: Sequence, own: Sequence[int], own_sum: float, k: int, *,
              allow_touching: bool) -> list[tuple[list[int], float]]:
    """Fast-Block-Select's ``k`` best plans among its final pass's candidates (see the module docstring).

    Parameters
    ----------
    groups : sequence of dict
        The last iteration's groups as the plan's trace records them (``length`` and
        ``candidates``, each with ``start`` and ``actual``).
    own : sequence of int
        Fast-Block-Select's plan, returned first.
    own_sum : float
        The sum of the actual scores of its runs.
    k : int
        Plans wanted; fewer come back when the pass compared fewer distinct plans, or
        after :data:`FBS_MAX_STATES` states.
    allow_touching : bool
        As in the search: whether two chosen runs may be adjacent.

    Returns
    -------
    list of (removed, sum of actual scores)
    """
    out: list[tuple[list[int], float]] = [(sorted(own), float(own_sum))]
    seen_plans = {tuple(sorted(own))}
    lists = []
    for g in groups:
        cands = sorted({(c["start"], c["actual"]) for c in g["candidates"]}, key=lambda sa: (-sa[1], sa[0]))
        lists.append([(s, a, g["length"]) for s, a in cands])
    if not lists or any(not c for c in lists):
        return out[:k]
    gap = 0 if allow_touching else 1

    def total(idx: tuple[int, ...]) -> float:
        return math.fsum(lists[g][i][1] for g, i in enumerate(idx))

    def plan_of(idx: tuple[int, ...]) -> list[int] | None:
        runs = sorted((lists[g][i][0], lists[g][i][2]) for g, i in enumerate(idx))
        for (s0, l0), (s1, _) in zip(runs, runs[1:]):
            if s1 < s0 + l0 + gap:
                return None  # overlapping (or touching when not allowed)
        return [b for s, length in runs for b in range(s, s + length)]

    first = (0,) * len(lists)
    heap = [(-total(first), first)]
    seen = {first}
    popped = 0
    while heap and len(out) < k and popped < FBS_MAX_STATES:
        neg, idx = heapq.heappop(heap)
        popped += 1
        plan = plan_of(idx)
        if plan is not None and tuple(plan) not in seen_plans:
            seen_plans.add(tuple(plan))
            out.append((plan, -neg))
        for g in range(len(lists)):
            if idx[g] + 1 < len(lists[g]):
                child = idx[:g] + (idx[g] + 1,) + idx[g + 1:]
                if child not in seen:
                    seen.add(child)
                    heapq.heappush(heap, (-total(child), child))
    return out
