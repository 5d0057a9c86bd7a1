"""How many MI evaluations Fast-Block-Select saves, how long each selector takes, and how far
each lands from the optimum of the additive damage.

For each (blocks T, removed N) and each kind of table it prints, over many seeded tables:
Fast-Block-Select's evaluations against brute force (every run up to length N: 150 for
T=32 N=5, 355 for T=40 N=10), the share of tables where it finds the optimum and its
damage gap (damage minus the optimal damage; damage = sum over removed runs of
1 - information coefficient), the same for greedy and Gromov; then the median time of each
selector on one table, after warm-up, with its ratio to ``optimal`` timed in the same run.

Tables:
- ``random``: independent uniform information coefficients, as MI in nats;
- ``realistic``: MI decaying with run length as the data processing inequality requires
  (products of per-block coefficients), low in the first blocks and the last, with a
  redundant deep region (the shape of the paper's Table 6).

Usage: PYTHONPATH=python python benchmarks/bench_select.py [--tables 50] [--repeats 20]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import miprun  # noqa: E402
from miprun._native import core as native_core  # noqa: E402
from miprun.selection.select import select  # noqa: E402
from miprun.scoring.table import ScoreTable  # noqa: E402

CASES = [(32, 5), (40, 10), (80, 20)]
KINDS = ("random", "realistic")


def _to_mi(ic: np.ndarray) -> np.ndarray:
    """Information coefficient in [0, 1) to MI in nats."""
    return -0.5 * np.log1p(-np.clip(ic, 0.0, 0.999) ** 2)


def coefficients(num_blocks: int, max_run: int, seed: int, kind: str) -> np.ndarray:
    """Information coefficients of every run, shape (num_blocks, max_run), NaN outside."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        ic = rng.uniform(0.3, 0.99, (num_blocks, max_run))
    else:
        depth = np.arange(num_blocks) / (num_blocks - 1)
        q = 0.80 + 0.12 * depth                            # later blocks pass more through
        deep = (depth > 0.55) & (depth < 0.95)
        q[deep] += 0.05                                    # the redundant deep region
        q[:2] -= 0.15                                      # first blocks reshape the embedding
        q[-1] = 0.55                                       # the last block matters
        q = np.clip(q + rng.normal(0.0, 0.015, num_blocks), 0.3, 0.995)
        ic = np.empty((num_blocks, max_run))
        for s in range(num_blocks):
            for n in range(1, max_run + 1):
                ic[s, n - 1] = np.prod(q[s:s + n]) * rng.uniform(0.97, 1.0)
    starts = np.arange(num_blocks)[:, None]
    lengths = np.arange(1, max_run + 1)[None, :]
    return np.where(starts + lengths > num_blocks, np.nan, ic)


def tables(num_blocks: int, num_remove: int, seed: int, kind: str) -> dict[str, ScoreTable]:
    """The same redundancy as an MI table and as the two distance baselines' tables."""
    ic = coefficients(num_blocks, num_remove, seed, kind)
    return {"hist": ScoreTable(values=_to_mi(ic), estimator="hist"),
            "cosine": ScoreTable(values=2.0 * (1.0 - ic), estimator="cosine"),
            "angular": ScoreTable(values=1.0 - ic, estimator="angular")}


SELECTIONS = {  # label: (table, keyword arguments of select)
    "fast_block_select": ("hist", {"selector": "fast_block_select"}),
    "fast_block_select (normalised)": ("hist", {"selector": "fast_block_select", "scale": "normalised"}),
    "optimal": ("hist", {"selector": "optimal"}),
    "exhaustive": ("hist", {"selector": "exhaustive"}),
    "greedy": ("hist", {"selector": "greedy"}),
    "shortgpt": ("cosine", {"selector": "shortgpt"}),
    "gromov": ("angular", {"selector": "gromov"}),
}


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def quality(num_blocks: int, num_remove: int, kind: str, count: int) -> None:
    brute = sum(num_blocks - n + 1 for n in range(1, num_remove + 1))
    evals, gaps = [], {k: [] for k in ("fast_block_select", "fast_block_select (normalised)", "greedy", "gromov")}
    iterations = []
    for seed in range(count):
        t = tables(num_blocks, num_remove, seed, kind)
        best = select(t["hist"], num_remove, selector="optimal").objective
        for label in gaps:
            which, kwargs = SELECTIONS[label]
            plan = select(t[which], num_remove, **kwargs)
            gaps[label].append(plan.objective - best)
            if label == "fast_block_select":
                evals.append(plan.evaluations)
                iterations.append(plan.trace[-1]["iterations"])
    print(f"  MI evaluations: fast_block_select median {statistics.median(evals):.0f} "
          f"(min {min(evals)}, max {max(evals)}) vs brute force {brute}: "
          f"ratio {statistics.median(evals) / brute:.2f}; iterations median {statistics.median(iterations):.0f}")
    for label, g in gaps.items():
        g = np.array(g)
        print(f"  {label:32s} optimal in {np.mean(g < 1e-12):5.0%} of {count} tables, damage gap "
              f"mean {g.mean():.4f} median {np.median(g):.4f} max {g.max():.4f}")


def timing(num_blocks: int, num_remove: int, kind: str, repeats: int) -> None:
    t = tables(num_blocks, num_remove, 0, kind)
    times = {}
    for label, (which, kwargs) in SELECTIONS.items():
        if label == "exhaustive" and math.comb(num_blocks, num_remove) > 5e6:
            continue  # refused above 5e7 subsets, and too slow to repeat above 5e6
        times[label] = median_time(lambda: select(t[which], num_remove, **kwargs), repeats)
    values = t["hist"].values
    callback = lambda s, n: float(values[s, n - 1])  # noqa: E731
    times["fast_block_select (callback)"] = median_time(
        lambda: select(callback, num_remove, num_blocks=num_blocks), repeats)
    base = times["optimal"]
    for label, sec in times.items():
        print(f"  time {label:32s} {sec * 1e3:9.3f} ms  ({sec / base:7.2f} x optimal)")
    if "exhaustive" not in times:
        print(f"  time {'exhaustive':32s}       n/a  (C({num_blocks}, {num_remove}) = "
              f"{math.comb(num_blocks, num_remove):.3g} subsets)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=50, help="seeded tables per case for the quality figures")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats after one warm-up")
    args = parser.parse_args()
    core = native_core()
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"{platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, miprun {miprun.__version__}, "
          f"native core OpenMP {core.openmp}")
    print(f"tables per case {args.tables}, timing: median of {args.repeats} after 1 warm-up")
    for num_blocks, num_remove in CASES:
        for kind in KINDS:
            print(f"\nT={num_blocks} N={num_remove} {kind} (table {num_blocks} x {num_remove})")
            quality(num_blocks, num_remove, kind, args.tables)
            timing(num_blocks, num_remove, kind, args.repeats)


if __name__ == "__main__":
    main()
