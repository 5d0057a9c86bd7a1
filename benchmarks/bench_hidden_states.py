"""Every CPU estimator on one realistic hidden-state pair: n = 8192 tokens x d = 1024.

Question: what does one MI evaluation cost on CPU at the size of a calibration batch, for
each estimator and reduction, and how does the native core compare with the float64
reference where the reference is affordable?

The pair imitates the residual stream around a block: ``x`` is heavy-tailed (a Gaussian
with 16 shared factors, scaled per token by a Student-t chi with 3 dof) with 4 "massive
activation" columns 300x larger; ``y = x + 0.3 tanh(x) + t-noise``. Both are bfloat16, as
a model would give them (the core widens them to float32 exactly). Defaults: hist bins
"auto" (204 pooled, 21 per column), ksg k = 3 with 20000 sampled pairs (pooled), every
row (per_dim), 4096 rows projected to 4 dimensions (projection).

Run: ``PYTHONPATH=python python benchmarks/bench_hidden_states.py [--reference]``
(``--reference`` also times the float64 reference where it runs in seconds.)
"""

from __future__ import annotations

import argparse
import os

import torch

from bench_cpu_hist import machine_header, median_ms, print_table, timed
from miprun import mutual_information
from miprun.mi import codes as C

N_TOKENS, D_MODEL = 8192, 1024


def hidden_pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    factors = torch.randn(n, 16, generator=g) @ torch.randn(16, d, generator=g) / 4
    z = factors + torch.randn(n, d, generator=g)
    chi = torch.randn(n, 3, generator=g).pow(2).sum(1, keepdim=True) / 3  # chi^2_3 / 3 per token
    x = z / chi.sqrt()
    x[:, :4] = 300.0 * (x[:, :4].abs() + 1.0)  # massive activations: large, one-signed
    noise = torch.randn(n, d, generator=g) / (torch.randn(n, 3, generator=g).pow(2).sum(1, keepdim=True) / 3).sqrt()
    y = x + 0.3 * torch.tanh(x) + 0.5 * noise
    return x.to(torch.bfloat16), y.to(torch.bfloat16)


CASES = [  # (label, keyword arguments, reference affordable)
    ("hist pooled", dict(estimator="hist", reduction="pooled"), True),
    ("hist per_dim", dict(estimator="hist", reduction="per_dim"), True),
    ("hist pooled, Miller-Madow", dict(estimator="hist", reduction="pooled", bias_correction="miller_madow"), True),
    ("ksg pooled (20000 pairs)", dict(estimator="ksg", reduction="pooled"), False),
    ("ksg per_dim (all 8192 rows)", dict(estimator="ksg", reduction="per_dim"), False),
    ("ksg projection (4096 rows, p=4)", dict(estimator="ksg", reduction="projection"), True),
    ("gaussian pooled", dict(estimator="gaussian", reduction="pooled"), True),
    ("gaussian per_dim", dict(estimator="gaussian", reduction="per_dim"), True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", action="store_true", help="also time the float64 reference")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    machine_header(f"CPU estimators on a hidden-state pair, n = {N_TOKENS} x d = {D_MODEL}, bfloat16")
    x, y = hidden_pair(N_TOKENS, D_MODEL)

    rows = []
    for label, kw, ref_ok in CASES:
        value = mutual_information(x, y, backend="native", **kw)
        t, cpu = timed(lambda: mutual_information(x, y, backend="native", **kw), repeats=args.repeats, warmup=1)
        ref_cell, speed = "-", "-"
        if args.reference and ref_ok:
            ref_value = mutual_information(x, y, backend="reference", **kw)
            if abs(ref_value - value) > 1e-9:
                raise SystemExit(f"{label}: native {value!r} but reference {ref_value!r}")
            t_ref = median_ms(lambda: mutual_information(x, y, backend="reference", **kw), repeats=1, warmup=0)
            ref_cell, speed = f"{t_ref:.0f}", f"{t_ref / t:.0f}x"
        rows.append((label, f"{value:.4f}", f"{t:.1f}", f"{cpu:.1f}", ref_cell, speed))

    # the score window's steps: one state's edges and codes, then counts for one pair of states
    for per_dim in (False, True):
        bins = 21 if per_dim else 204
        what = "per_dim" if per_dim else "pooled"
        t_edges = median_ms(lambda: C.compute_edges(x, bins=bins, per_dim=per_dim, backend="native"), repeats=args.repeats)
        edges = C.compute_edges(x, bins=bins, per_dim=per_dim, backend="native")
        t_codes = median_ms(lambda: C.codes_from_edges(x, edges, backend="native"), repeats=args.repeats)
        cx = C.codes_from_edges(x, edges, backend="native")
        cy = C.bin_codes(y, bins=bins, per_dim=per_dim, backend="native")
        t_counts = median_ms(lambda: C.joint_counts(cx, cy, bins=bins, per_dim=per_dim, backend="native"),
                             repeats=args.repeats)
        rows.append((f"window step: edges ({what}, {bins} bins)", "", f"{t_edges:.1f}", "", "", ""))
        rows.append((f"window step: codes ({what})", "", f"{t_codes:.1f}", "", "", ""))
        rows.append((f"window step: joint counts ({what})", "", f"{t_counts:.1f}", "", "", ""))

    print(f"\nmedian of {args.repeats} after 1 warm-up call (reference: one call); CPU: process CPU time, "
          "all threads; public API, so input checks and bf16 -> float32 conversion are included")
    print_table(rows, ("estimator", "MI (nats)", "native ms", "native CPU ms", "reference ms", "speed-up"))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
