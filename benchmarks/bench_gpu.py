"""How fast the Triton kernels run on a GPU: histogram MI against the copy bandwidth, and
per-column KSG against scikit-learn.

Histogram MI on paired bf16 activations ``x, y: (n, d)`` (default 32768 x 4096, 512 MiB
for the pair). Each step is timed, and its achieved bandwidth (bytes it must read or
write, divided by its median time) is compared with a device-to-device copy of the same
pair measured in the same run (bytes read plus bytes written, divided by its time).
Target: the counting pass at >= 50 % of the copy bandwidth.

- ``edges``: quantile edges of x and of y (16-bit pattern counting, one read of each);
- ``count``: the fused binning + joint counting pass given the edges (one read of both);
- ``hist``: ``hist_counts_triton`` + ``mi_from_counts`` end to end (edges + count + MI epilogue), pooled and per column;
- ``codes`` / ``count codes``: binning to uint8 codes (read 2 B, write 1 B per value) and
  counting a pair of code arrays (read 2 B per pair), the steps of the one-pass score table.

Per-column KSG on ``(4096, 4096)`` (k = 3): ``ksg_per_dim_triton`` on the prepared points
against ``sklearn.feature_selection.mutual_info_regression`` called column by column on
the CPU. sklearn is timed on a few columns and extrapolated linearly to all columns (its
cost per column does not depend on the others); the script says how many it timed.
Target: >= 1000 x.

Usage: PYTHONPATH=python python benchmarks/bench_gpu.py [--n 32768] [--d 4096]
       [--ksg-n 4096] [--ksg-d 4096] [--sklearn-cols 8] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import torch  # noqa: E402

GIB = 1024 ** 3
DEVICE = "cuda"  # --smoke-cpu runs the same code on CPU tensors in Triton's interpreter


def _median_ms(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` runs after ``warmup`` (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    if DEVICE != "cuda":  # interpreter smoke run
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def _machine() -> None:
    import triton

    if DEVICE != "cuda":
        print(f"SMOKE RUN on CPU in Triton's interpreter (timings mean nothing); triton {triton.__version__}")
        return
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, {props.multi_processor_count} SMs, {props.total_memory / GIB:.0f} GiB; "
          f"CUDA {torch.version.cuda}; torch {torch.__version__}; triton {triton.__version__}")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} threads; "
          f"Python {platform.python_version()}; {platform.platform()}")


def bench_hist(n: int, d: int, repeats: int) -> None:
    from miprun.kernels import hist as khist
    from miprun.kernels.edges import compute_edges_triton
    from miprun.mi.binning import resolve_bins
    from miprun.mi.codes import mi_from_counts

    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(n, d, device=DEVICE, dtype=torch.float32, generator=g)
    y = (x + 0.5 * torch.randn(n, d, device=DEVICE, dtype=torch.float32, generator=g)).to(torch.bfloat16)
    x = x.to(torch.bfloat16)
    pair_bytes = 2 * x.numel() * x.element_size()
    bins = resolve_bins("auto", n * d)
    bins_col = resolve_bins("auto", n)
    print(f"\nHistogram MI: x, y bf16 ({n}, {d}) each, {pair_bytes / GIB:.2f} GiB per pair; "
          f"bins auto = {bins} pooled, {bins_col} per column; median of {repeats} after 2 warm-ups")

    dst_x, dst_y = torch.empty_like(x), torch.empty_like(y)

    def copy():
        dst_x.copy_(x)
        dst_y.copy_(y)

    t_copy = _median_ms(copy, repeats)
    copy_bw = 2 * pair_bytes / t_copy / 1e6  # GB/s, read + write
    print(f"  device-to-device copy of the pair: {t_copy:.3f} ms, {copy_bw:.0f} GB/s (read + write)")

    ex = compute_edges_triton(x, bins=bins, binning="quantile")
    ey = compute_edges_triton(y, bins=bins, binning="quantile")
    ex_col = compute_edges_triton(x, bins=bins_col, binning="quantile", per_dim=True)
    cx, cy = khist.codes_from_edges_triton(x, ex), khist.codes_from_edges_triton(y, ey)
    cx_col = khist.codes_from_edges_triton(x, ex_col)
    cy_col = khist.codes_from_edges_triton(y, compute_edges_triton(y, bins=bins_col, binning="quantile", per_dim=True))
    code_bytes = x.numel()
    steps = [
        ("edges, pooled quantile (x and y)", pair_bytes,
         lambda: (compute_edges_triton(x, bins=bins, binning="quantile"),
                  compute_edges_triton(y, bins=bins, binning="quantile"))),
        ("count, pooled, " + ("binning fused" if bins > khist.ONEHOT_MAX_POOLED_BINS else "codes + one-hot"),
         pair_bytes, lambda: khist._joint_counts(x, y, bins, False, ex, ey)),
        ("hist pooled (edges + count + MI)", pair_bytes,
         lambda: mi_from_counts(khist.hist_counts_triton(x, y, bins=bins, binning="quantile", reduction="pooled"))),
        ("codes of x, pooled edges", x.numel() * x.element_size() + code_bytes,
         lambda: khist.codes_from_edges_triton(x, ex)),
        ("count codes, pooled", 2 * code_bytes, lambda: khist.joint_counts_triton(cx, cy, bins=bins)),
        ("codes of x, per-column edges", x.numel() * x.element_size() + code_bytes,
         lambda: khist.codes_from_edges_triton(x, ex_col)),
        ("count codes, per column", 2 * code_bytes,
         lambda: khist.joint_counts_triton(cx_col, cy_col, bins=bins_col, per_dim=True)),
        ("hist per column (edges + codes + count + MI)", pair_bytes,
         lambda: mi_from_counts(khist.hist_counts_triton(x, y, bins=bins_col, binning="quantile", reduction="per_dim"))),
    ]
    print(f"  {'step':54s} {'ms':>9s} {'GB/s':>7s} {'of copy':>8s}")
    for name, nbytes, fn in steps:
        t = _median_ms(fn, repeats)
        bw = nbytes / t / 1e6
        print(f"  {name:54s} {t:9.3f} {bw:7.0f} {bw / copy_bw:8.1%}")


def bench_ksg(n: int, d: int, sklearn_cols: int, repeats: int) -> None:
    from miprun.kernels import knn
    from miprun.mi.ksg import ksg_points_ref, prepare

    g = torch.Generator(device=DEVICE).manual_seed(1)
    x = torch.randn(n, d, device=DEVICE, generator=g)
    y = x + torch.randn(n, d, device=DEVICE, generator=g) * torch.linspace(0.2, 3.0, d, device=DEVICE)
    print(f"\nPer-column KSG (k=3): x, y float32 ({n}, {d}); GPU median of {repeats} after 1 warm-up")
    xs, ys = prepare(x, y, reduction="per_dim", max_samples=None, seed=0)
    t_gpu = _median_ms(lambda: knn.ksg_per_dim_triton(xs, ys, 3), repeats, warmup=1) / 1e3
    t_prep = _median_ms(lambda: prepare(x, y, reduction="per_dim", max_samples=None, seed=0), repeats) / 1e3
    # the kernel is exact: spot-check two columns against the float64 reference
    for j in (0, d - 1):
        a = knn.ksg_per_dim_triton(xs[:, j:j + 1], ys[:, j:j + 1], 3)
        b = ksg_points_ref(xs[:, j:j + 1], ys[:, j:j + 1], 3)
        assert abs(a - b) < 1e-12, (j, a, b)

    try:
        from sklearn.feature_selection import mutual_info_regression
    except ImportError:
        print("  scikit-learn is not installed: no baseline")
        return
    xc, yc = x.cpu().double().numpy(), y.cpu().double().numpy()
    cols = list(range(0, d, max(1, d // sklearn_cols)))[:sklearn_cols]
    start = time.perf_counter()
    for j in cols:
        mutual_info_regression(xc[:, [j]], yc[:, j], n_neighbors=3, random_state=0)
    t_col = (time.perf_counter() - start) / len(cols)
    t_sk = t_col * d
    print(f"  sklearn mutual_info_regression: {t_col * 1e3:.1f} ms per column, timed on {len(cols)} columns, "
          f"extrapolated to {d}: {t_sk:.1f} s (one CPU thread)")
    print(f"  ksg_per_dim_triton: {t_gpu:.3f} s (+ prepare {t_prep * 1e3:.1f} ms)")
    print(f"  speed-up: {t_sk / t_gpu:.0f} x kernel, {t_sk / (t_gpu + t_prep):.0f} x with prepare (target >= 1000 x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--ksg-n", type=int, default=4096)
    ap.add_argument("--ksg-d", type=int, default=4096)
    ap.add_argument("--sklearn-cols", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--smoke-cpu", action="store_true",
                    help="run on CPU tensors with TRITON_INTERPRET=1 (checks the script, not the speed)")
    args = ap.parse_args()
    global DEVICE
    if args.smoke_cpu:
        if os.environ.get("TRITON_INTERPRET") != "1":
            sys.exit("--smoke-cpu needs TRITON_INTERPRET=1 in the environment")
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("bench_gpu.py measures Triton kernels on a CUDA GPU and none is available here; "
              "the kernels' correctness is tested on CPU by tests/kernels with TRITON_INTERPRET=1.")
        return
    _machine()
    bench_hist(args.n, args.d, args.repeats)
    bench_ksg(args.ksg_n, args.ksg_d, args.sklearn_cols, max(1, args.repeats // 3))


if __name__ == "__main__":
    main()
