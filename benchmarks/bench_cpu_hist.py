"""CPU histogram MI: the native core against numpy.histogram2d and a torch.bincount pipeline.

Question: how much faster is ``miprun``'s C++ histogram estimator than the usual numpy and
torch ways of computing the same plug-in MI, on n = 10^6 scalar pairs?

Every side gets the same bins. "Given edges": the quantile edges (order statistics
sorted(v)[floor(j n / bins)]) are computed once and handed to every side, which then bins
both variables, counts the joint histogram and takes the plug-in MI:
- numpy: ``np.histogram2d(x, y, bins=[edges_x, edges_y])`` (edges closed by min and max)
  and the plug-in sum in numpy;
- torch: ``torch.searchsorted(edges, v, right=True)`` codes, ``torch.bincount`` of
  ``cx * bins + cy``, plug-in sum in float64;
- miprun: ``codes_from_edges_cpu`` on x and y, ``joint_counts_cpu``, ``_core.mi_from_counts``.
"End to end": each side also finds the edges itself (numpy: ``np.partition`` at the ranks;
torch: ``torch.sort``; miprun: ``mutual_information(..., backend="native")``, validation
and conversion included). All sides must return the same MI (checked).

Run: ``PYTHONPATH=python python benchmarks/bench_cpu_hist.py [--n 1000000] [--bins 64]``
Targets: >= 20x numpy.histogram2d and >= 3x torch.bincount, given edges.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch


# ----------------------------------------------------------------------------- shared helpers
def machine_header(title: str) -> None:
    """Print the machine, versions, threads and load, so a table can be read later."""
    from miprun._native import core
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"# {title}")
    print(f"machine: {platform.system()} {platform.release()} {platform.machine()}, {cpu}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), native core OpenMP={core().openmp} "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})")


def median_ms(fn, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    return timed(fn, repeats, warmup)[0]


def timed(fn, repeats: int = 7, warmup: int = 2) -> tuple[float, float]:
    """Medians of wall time and of process CPU time (all threads) of ``fn()``, in ms.

    On a shared machine the wall time depends on the load; the CPU time much less, so the
    two together say how a run on an idle machine would compare.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def print_table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")


# ----------------------------------------------------------------------------- the sides
def plugin_mi_numpy(counts: np.ndarray) -> float:
    p = counts / counts.sum()
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def plugin_mi_torch(counts: torch.Tensor) -> float:
    p = counts.to(torch.float64) / counts.sum()
    px, py = p.sum(1, keepdim=True), p.sum(0, keepdim=True)
    nz = p > 0
    return float((p[nz] * torch.log(p[nz] / (px * py)[nz])).sum())


def quantile_ranks(n: int, bins: int) -> np.ndarray:
    return (np.arange(1, bins, dtype=np.int64) * n) // bins


def numpy_given_edges(x, y, ex, ey):
    fx = np.concatenate([[x.min()], ex, [x.max()]])
    fy = np.concatenate([[y.min()], ey, [y.max()]])
    counts, _, _ = np.histogram2d(x, y, bins=[fx, fy])
    return plugin_mi_numpy(counts)


def numpy_end_to_end(x, y, bins):
    r = quantile_ranks(x.size, bins)
    ex, ey = np.partition(x, r)[r], np.partition(y, r)[r]
    return numpy_given_edges(x, y, ex, ey)


def torch_given_edges(tx, ty, tex, tey, bins):
    cx = torch.searchsorted(tex, tx, right=True)
    cy = torch.searchsorted(tey, ty, right=True)
    return plugin_mi_torch(torch.bincount(cx * bins + cy, minlength=bins * bins).reshape(bins, bins))


def torch_end_to_end(tx, ty, bins):
    r = torch.from_numpy(quantile_ranks(tx.numel(), bins))
    tex, tey = torch.sort(tx).values[r], torch.sort(ty).values[r]
    return torch_given_edges(tx, ty, tex, tey, bins)


def native_given_edges(tx, ty, tex, tey, bins):
    from miprun._native import core
    from miprun.mi.cpu import codes_from_edges_cpu, joint_counts_cpu
    cx = codes_from_edges_cpu(tx[:, None], tex)
    cy = codes_from_edges_cpu(ty[:, None], tey)
    return core().mi_from_counts(joint_counts_cpu(cx, cy, bins=bins, per_dim=False).numpy(), False)


def native_end_to_end(tx, ty, bins, binning="quantile"):
    from miprun import mutual_information
    return mutual_information(tx, ty, estimator="hist", bins=bins, binning=binning, backend="native")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bins", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    n, bins = args.n, args.bins
    machine_header(f"CPU histogram MI, n = {n} scalar pairs, {bins} quantile bins, float64")

    rng = np.random.default_rng(0)
    x = rng.standard_normal(n)
    y = 0.8 * x + 0.6 * rng.standard_normal(n)
    r = quantile_ranks(n, bins)
    ex, ey = np.sort(x)[r], np.sort(y)[r]
    tx, ty, tex, tey = (torch.from_numpy(a) for a in (x, y, ex, ey))

    sides = {
        ("given edges", "numpy.histogram2d"): lambda: numpy_given_edges(x, y, ex, ey),
        ("given edges", "torch searchsorted + bincount"): lambda: torch_given_edges(tx, ty, tex, tey, bins),
        ("given edges", "miprun native"): lambda: native_given_edges(tx, ty, tex, tey, bins),
        ("end to end", "numpy partition + histogram2d"): lambda: numpy_end_to_end(x, y, bins),
        ("end to end", "torch sort + searchsorted + bincount"): lambda: torch_end_to_end(tx, ty, bins),
        ("end to end", "miprun mutual_information(native)"): lambda: native_end_to_end(tx, ty, bins),
    }
    values = {key: fn() for key, fn in sides.items()}
    ref = values[("given edges", "numpy.histogram2d")]
    for key, v in values.items():
        if abs(v - ref) > 1e-10:
            raise SystemExit(f"{key} computed MI {v!r}, numpy {ref!r}: the sides do not compute the same thing")
    times = {key: timed(fn, repeats=args.repeats) for key, fn in sides.items()}

    rows = []
    for key, (wall, cpu) in times.items():
        mine = next(times[k] for k in sides if k[0] == key[0] and k[1].startswith("miprun"))
        rows.append((key[0], key[1], f"{wall:.2f}", f"{wall / mine[0]:.1f}x", f"{cpu:.2f}", f"{cpu / mine[1]:.1f}x"))
    print(f"\nMI = {ref:.6f} nats on every side; median of {args.repeats} after 2 warm-up calls; "
          "CPU = process CPU time, all threads")
    print_table(rows, ("task", "side", "wall ms", "wall / miprun", "CPU ms", "CPU / miprun"))
    ge = {k[1]: v for k, v in times.items() if k[0] == "given edges"}
    print()
    for name, target in (("numpy.histogram2d", 20), ("torch searchsorted + bincount", 3)):
        wall = ge[name][0] / ge["miprun native"][0]
        verdict = "met" if wall >= target else "missed"
        print(f"target >= {target}x {name} (given edges, wall): {wall:.1f}x {verdict}; "
              f"CPU time ratio {ge[name][1] / ge['miprun native'][1]:.1f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
