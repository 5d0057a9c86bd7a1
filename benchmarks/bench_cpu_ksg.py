"""CPU KSG: the native core against scikit-learn's ``mutual_info_regression``.

Question: how much faster is ``miprun``'s KSG estimator than scikit-learn's on n = 10^5
scalar pairs, and is it as accurate?

Both sides run KSG estimator 1 with k = 3 on the same bivariate normal sample (every
point, no subsampling: ``max_samples=n``), after the same standardisation and 1e-10
tie-breaking jitter; the error is measured against the closed form -1/2 log(1 - rho^2).
miprun is timed through the public ``mutual_information(..., backend="native")`` (input
checks, standardisation and jitter in torch included); scikit-learn through
``mutual_info_regression(x[:, None], y, n_neighbors=3)``.

Run: ``PYTHONPATH=python python benchmarks/bench_cpu_ksg.py [--n 100000]``
Target: >= 20x faster, with |error| <= scikit-learn's |error| + 0.01 nats.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import torch
from sklearn import __version__ as sklearn_version
from sklearn.feature_selection import mutual_info_regression

from bench_cpu_hist import machine_header, print_table, timed
from miprun import mutual_information


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n, k = args.n, args.k
    machine_header(f"CPU KSG (k = {k}), n = {n} scalar pairs, bivariate normal")
    print(f"scikit-learn {sklearn_version}")

    rows = []
    ratios, accurate = [], []
    for rho in (0.5, 0.9, 0.99):
        true = -0.5 * math.log(1 - rho * rho)
        rng = np.random.default_rng(int(rho * 100))
        x = rng.standard_normal(n)
        y = rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal(n)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def ours():
            return mutual_information(tx, ty, estimator="ksg", k=k, max_samples=n, backend="native")

        def theirs():
            return float(mutual_info_regression(x[:, None], y, n_neighbors=k, random_state=0)[0])

        v_ours, v_theirs = ours(), theirs()
        t_ours, c_ours = timed(ours, repeats=args.repeats, warmup=1)
        t_theirs, c_theirs = timed(theirs, repeats=args.repeats, warmup=1)
        err_ours, err_theirs = v_ours - true, v_theirs - true
        ratios.append(t_theirs / t_ours)
        accurate.append(abs(err_ours) <= abs(err_theirs) + 0.01)
        rows.append((rho, f"{true:.4f}", f"{t_theirs:.1f}", f"{t_ours:.1f}", f"{t_theirs / t_ours:.1f}x",
                     f"{c_theirs / c_ours:.1f}x", f"{err_theirs:+.4f}", f"{err_ours:+.4f}"))

    print(f"\nmedian wall time of {args.repeats} after 1 warm-up call; CPU ratio: process CPU time, all "
          "threads; errors against -1/2 log(1 - rho^2) in nats")
    print_table(rows, ("rho", "true MI", "sklearn ms", "miprun ms", "speed-up", "CPU ratio", "sklearn error",
                       "miprun error"))
    print(f"\ntarget >= 20x: min speed-up {min(ratios):.1f}x ({'met' if min(ratios) >= 20 else 'missed'})")
    print(f"target |error| <= sklearn's + 0.01: {'met' if all(accurate) else 'missed'} on {sum(accurate)}/{len(accurate)}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
