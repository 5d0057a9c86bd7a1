"""Plain-Python float64 twins of the native selectors, and random score tables, for the tests.

Written independently of csrc/select: brute force wherever the native code is clever.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def runs(blocks) -> list[tuple[int, int]]:
    """Maximal contiguous runs (start, length) of a set of blocks."""
    out: list[list[int]] = []
    for b in sorted(blocks):
        if out and out[-1][0] + out[-1][1] == b:
            out[-1][1] += 1
        else:
            out.append([b, 1])
    return [(s, n) for s, n in out]


def damage_ref(removed, normalised: np.ndarray) -> float:
    """Sum over the maximal runs of 1 - score; inf when a run is longer than the table holds."""
    total = 0.0
    for s, n in runs(removed):
        if n > normalised.shape[1]:
            return math.inf
        total += 1.0 - float(normalised[s, n - 1])
    return total


def all_damages(normalised: np.ndarray, num_remove: int) -> dict[tuple[int, ...], float]:
    """Damage of every num_remove-subset (inf where infeasible)."""
    return {c: damage_ref(c, normalised)
            for c in itertools.combinations(range(normalised.shape[0]), num_remove)}


def ceil_log_ref(length: int, base: float) -> int:
    """Smallest k with base**k >= length."""
    k = 0
    while base ** k < length * (1 - 1e-12):
        k += 1
    return k


def _best_assignment(candidates, allow_touching):
    """Brute-force step 6: one (start, length, score) per group, separated runs, max sum."""
    best = (-math.inf, None)
    gap = 0 if allow_touching else 1

    def fits(start, length, taken):
        return all(start + length + gap <= s or s + n + gap <= start for s, n in taken)

    def visit(i, taken, total):
        nonlocal best
        if i == len(candidates):
            if total > best[0]:
                best = (total, list(taken))
            return
        for start, length, score in candidates[i]:
            if fits(start, length, taken):
                taken.append((start, length))
                visit(i + 1, taken, total + score)
                taken.pop()

    visit(0, [], 0.0)
    return best


def fast_block_select_ref(score, num_blocks, num_remove, *, log_base=math.e,
                          allow_touching=False, max_iterations=100):
    """Fast-Block-Select as DESIGN.md section 4 states it, step 6 by brute force.

    Returns (removed, runs scored {(start, length): score}, iterations, converged).
    """
    cache: dict[tuple[int, int], float] = {}

    def get(s, n):
        if (s, n) not in cache:
            cache[(s, n)] = float(score(s, n))
        return cache[(s, n)]

    r = [get(b, 1) for b in range(num_blocks)]
    order = sorted(range(num_blocks), key=lambda b: (-r[b], b))
    pruning = sorted(order[:num_remove])
    alternatives = set(order[num_remove:num_remove + min(num_remove, num_blocks - num_remove)])
    for iteration in range(1, max_iterations + 1):
        pool = set(pruning) | alternatives
        groups = runs(pruning)
        candidates = []
        for start, length in groups:
            listed = [(sum(r[s:s + length]), s) for s in range(num_blocks - length + 1)
                      if all(b in pool for b in range(s, s + length))]
            listed.sort(key=lambda e: (-e[0], e[1]))
            k = min(ceil_log_ref(length, log_base) + 5, len(listed))
            starts = [s for _, s in listed[:k]]
            if start not in starts:
                starts.append(start)
            candidates.append([(s, length, get(s, length)) for s in starts])
        current = sum(get(s, n) for s, n in groups)
        total, taken = _best_assignment(candidates, allow_touching)
        if total > current + 1e-12 * max(1.0, abs(current)):
            new = sorted(b for s, n in taken for b in range(s, s + n))
        else:
            new = pruning
        if new == pruning:
            return pruning, cache, iteration, True
        pruning = new
    return pruning, cache, max_iterations, False


def random_table(num_blocks: int, max_run: int, seed: int, kind: str = "uniform") -> np.ndarray:
    """Oriented scores in [0, 1], shape (num_blocks, max_run), NaN outside the model.

    ``uniform``: independent uniform scores. ``dpi``: a run scores at most as much as each
    of its sub-runs, as the data processing inequality says MI does (products of per-block
    redundancies, with noise).
    """
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        values = rng.random((num_blocks, max_run))
    else:
        q = rng.uniform(0.3, 1.0, num_blocks)
        values = np.empty((num_blocks, max_run))
        for s in range(num_blocks):
            for n in range(1, max_run + 1):
                values[s, n - 1] = np.prod(q[s:s + n]) * rng.uniform(0.8, 1.0)
    for s in range(num_blocks):
        for n in range(1, max_run + 1):
            if s + n > num_blocks:
                values[s, n - 1] = np.nan
    return values
