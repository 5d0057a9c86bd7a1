"""CPU joint KSG: the native core against a SciPy k-d tree implementation of the same estimator.

Question: how fast is ``mutual_information(x, y, estimator="ksg", reduction="joint")`` on the
CPU across the dimensions of BMI's tasks, in particular 10,000 samples of 5 + 5 columns, in
both norms within x and within y (Euclidean, the default, and the max-norm), and against
the usual way of computing KSG with a k-d tree library?

The baseline is KSG estimator 1 written on ``scipy.spatial.cKDTree`` as one usually writes
it: a tree on the joint points, ``query(k + 1, p=inf)`` for the k-th neighbour distance,
trees on x and on y, ``query_ball_point(r=eps, p=inf, return_length=True)`` for the counts
(``r`` is the float just below ``eps``: KSG counts strictly closer points), ``workers`` =
the threads miprun uses. It runs on the points miprun prepared (standardised, jittered), so
the two must agree to float64 summation order (checked); miprun is timed through the public
function, preparation included. The baseline exists for the max-norm only: the Euclidean
estimator's joint distance, the larger of two Euclidean norms, is no p-norm that one
cKDTree query searches. Data: ``y = 0.6 x[:, :dy] + 0.8 e`` (columns of y beyond dx are
noise).

Run: ``OMP_NUM_THREADS=2 PYTHONPATH=python python benchmarks/bench_cpu_ksg_joint.py``
Target: 10,000 samples of 5 + 5 in well under a second on 2 cores with the default norm
(printed with the max-norm's time and its ratio to the SciPy baseline, same run).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import scipy
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma

from bench_cpu_hist import machine_header, print_table, timed
from miprun import mutual_information
from miprun.mi.ksg import DEFAULT_METRICS, prepare

SHAPES = [(5000, 1, 1), (5000, 2, 1), (5000, 3, 3), (5000, 5, 5), (10000, 5, 5), (5000, 10, 10), (5000, 25, 25),
          (5000, 50, 50)]


def ksg_scipy(xs: np.ndarray, ys: np.ndarray, k: int, workers: int) -> float:
    """KSG estimator 1 with the max-norm on cKDTree, on prepared points ``(m, dx)``, ``(m, dy)``."""
    m = xs.shape[0]
    joint = np.hstack([xs, ys])
    dist, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf, workers=workers)  # column 0: the point itself
    radius = np.nextafter(dist[:, k], 0)  # strictly closer than the k-th neighbour
    nx1 = cKDTree(xs).query_ball_point(xs, r=radius, p=np.inf, return_length=True, workers=workers)
    ny1 = cKDTree(ys).query_ball_point(ys, r=radius, p=np.inf, return_length=True, workers=workers)
    return float(digamma(k) + digamma(m) - np.mean(digamma(nx1) + digamma(ny1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    machine_header(f"CPU joint KSG (k = {args.k}): native core, both norms, against scipy.spatial.cKDTree "
                   f"({threads} workers)")
    print(f"scipy {scipy.__version__}")
    rows, target = [], None
    for n, dx, dy in SHAPES:
        rng = np.random.default_rng(n + dx + dy)
        x = rng.standard_normal((n, dx))
        y = 0.6 * x[:, :dy] if dy <= dx else np.hstack([0.6 * x, np.zeros((n, dy - dx))])
        y = y + 0.8 * rng.standard_normal((n, dy))
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        xs, ys = (t.numpy() for t in prepare(tx, ty, reduction="joint", max_samples=None, seed=0))

        def ours(metric):
            return lambda: mutual_information(tx, ty, estimator="ksg", reduction="joint", k=args.k, metric=metric,
                                              backend="native")

        def theirs():
            return ksg_scipy(xs, ys, args.k, threads)

        v_max, v_theirs, v_euclid = ours("chebyshev")(), theirs(), ours("euclidean")()
        assert abs(v_max - max(0.0, v_theirs)) < 1e-9, (n, dx, dy, v_max, v_theirs)
        t_max, _ = timed(ours("chebyshev"), repeats=args.repeats, warmup=1)
        t_theirs, _ = timed(theirs, repeats=args.repeats, warmup=1)
        t_euclid, c_euclid = timed(ours("euclidean"), repeats=args.repeats, warmup=1)
        rows.append((n, f"{dx} + {dy}", f"{v_euclid:.4f}", f"{v_max:.4f}", f"{t_theirs:.1f}", f"{t_max:.1f}",
                     f"{t_theirs / t_max:.1f}x", f"{t_euclid:.1f}", f"{c_euclid:.1f}"))
        if (n, dx, dy) == (10000, 5, 5):
            target = t_euclid if DEFAULT_METRICS["joint"] == "euclidean" else t_max
    print(f"\nmedian wall time of {args.repeats} after 1 warm-up call, ms; CPU ms: process CPU time of miprun "
          "(Euclidean), all threads; miprun's max-norm estimate agrees with SciPy's to 1e-9 on every shape")
    print_table(rows, ("n", "dx + dy", "MI Euclidean", "MI max-norm", "scipy cKDTree ms (max-norm)",
                       "miprun max-norm ms", "speed-up", "miprun Euclidean ms", "miprun Euclidean CPU ms"))
    print(f"\ntarget: 10,000 x (5 + 5) well under 1 s on 2 cores, default norm ({DEFAULT_METRICS['joint']}): "
          f"{target / 1e3:.3f} s ({'met' if target < 500 else 'missed'}; under 0.5 s counts as well under)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
