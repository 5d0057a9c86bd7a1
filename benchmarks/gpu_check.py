"""The GPU path in one command: kernel tests, kernel benchmarks, and ``prune`` on a real GPU.

Run on a CUDA machine (about 5 minutes on an H100/H200):

    python benchmarks/gpu_check.py --out gpu_check.json

1. runs ``tests/kernels`` and every test marked ``requires_cuda`` on CUDA;
2. runs ``benchmarks/bench_gpu.py`` (histogram MI against the copy bandwidth, per-column
   KSG against scikit-learn, the score-window steps) and keeps its table;
3. measures joint KSG (``reduction="joint"``, 5 + 5 dimensions, k = 3, the Euclidean and
   the max-norm within each space) on CUDA tensors at 10^5 and 10^6 samples, and at 10^5
   checks it against the native core on the same prepared points;
4. prunes the synthetic 32-block Llama (and SmolLM2-135M from its GGUF, when the file and
   GGUF support are there) on the GPU with the default options (verify, refine and the plan
   check measuring candidate plans): the prune wall time against one plain forward pass
   over the same tokens, the same with ``offload=True``, and a check that no hidden state
   goes to the host while scoring (a torch profiler trace of the device-to-host copies: the
   largest one must be smaller than one hidden state);
5. the measurement sweep alone: 16 plans measured in one sweep of the measurer (prefix
   sharing, KL from the unpruned model in the same pass) against one full forward pass per
   plan over the same windows;
6. writes every figure, the device, driver, torch and triton versions to one JSON and
   prints a table.

``--smoke-cpu`` runs the same code on the CPU with small shapes (kernels in Triton's
interpreter), to test the script itself where there is no GPU: its timings mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import torch  # noqa: E402

import miprun  # noqa: E402
from miprun.util.versions import versions  # noqa: E402

DATA = Path(os.environ.get("MIPRUN_DATA", REPO.parent / "shared" / "data"))
SMOLLM2 = DATA / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def machine() -> dict:
    """Device, driver and library versions."""
    out = {"versions": versions(), "cpu": platform.processor() or platform.machine(), "threads": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(device=props.name, sms=props.multi_processor_count, memory_gib=props.total_memory / 2 ** 30)
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        out["driver"] = smi.stdout.strip() or None
    else:
        out["device"] = "cpu (smoke run)"
    return out


def run_tests(smoke: bool) -> dict:
    """``tests/kernels`` plus every ``requires_cuda`` test elsewhere; pytest's own summary line of each."""
    runs = {"kernels": ["tests/kernels"]}
    if not smoke:
        runs["requires_cuda"] = ["tests", "-m", "requires_cuda", "--ignore=tests/kernels"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    out = {}
    for name, selection in runs.items():
        t = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection], cwd=REPO,
                             env=env, capture_output=True, text=True)
        lines = [ln for ln in run.stdout.splitlines() if " passed" in ln or " failed" in ln or " error" in ln]
        out[name] = {"returncode": run.returncode, "summary": lines[-1] if lines else run.stdout[-300:],
                     "seconds": time.perf_counter() - t, "failures": _failures(run.stdout)}
    return out


def _failures(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))][:20]


def run_bench(smoke: bool) -> dict:
    """``bench_gpu.py``'s table, as printed."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py")]
    if smoke:  # the interpreter runs a kernel thousands of times slower: tiny shapes
        cmd += ["--smoke-cpu", "--n", "512", "--d", "16", "--ksg-n", "128", "--ksg-d", "4", "--sklearn-cols", "2",
                "--repeats", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    t = time.perf_counter()
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    return {"returncode": run.returncode, "table": run.stdout, "stderr": run.stderr[-2000:],
            "seconds": time.perf_counter() - t}


def run_joint_ksg(smoke: bool, repeats: int) -> list[dict]:
    """Joint KSG of x, y: (n, 5) each on the device (Triton kNN kernels), k = 3, in both norms.

    ``y = 0.6 x + 0.8 e``: five independent pairs of correlation 0.6, true MI
    ``-5/2 log(1 - 0.36) = 1.116`` nats (KSG in 10 dimensions is biased low). Where the CPU
    can afford it (10^5 samples), the native core estimates the same prepared points: the
    two must agree to float64 summation order.
    """
    from miprun.kernels.knn import ksg_points_triton
    from miprun.mi.cpu import ksg_points_cpu
    from miprun.mi.ksg import prepare
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = (300, 600) if smoke else (100_000, 1_000_000)
    truth = -2.5 * float(torch.log1p(torch.tensor(-0.36)))
    results = []
    for metric in ("euclidean", "chebyshev"):
        for n in sizes:
            g = torch.Generator(device=device).manual_seed(n)
            x = torch.randn(n, 5, device=device, generator=g)
            y = 0.6 * x + 0.8 * torch.randn(n, 5, device=device, generator=g)

            def estimate():
                return miprun.mutual_information(x, y, estimator="ksg", reduction="joint", k=3, metric=metric,
                                                 backend="triton")

            value = estimate()  # compiles the kernels
            seconds = _median_s(estimate, 1 if n >= 1_000_000 else repeats)
            out = {"n": n, "dims": "5+5", "k": 3, "metric": metric, "seconds": seconds, "estimate": value,
                   "true": truth}
            if n <= 100_000:
                xs, ys = prepare(x, y, reduction="joint", max_samples=None, seed=0)
                t = time.perf_counter()
                native = ksg_points_cpu(xs.cpu(), ys.cpu(), 3, metric=metric)
                out["native_seconds"] = time.perf_counter() - t
                out["kernel_minus_native"] = ksg_points_triton(xs, ys, 3, metric=metric) - native
                out["agrees_with_native"] = abs(out["kernel_minus_native"]) <= 1e-9
            results.append(out)
    return results


def synthetic_model(blocks: int, hidden: int):
    """A random Llama: ``blocks`` blocks of width ``hidden`` (4 heads, MLP 2.7x), vocabulary 2048."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2048, hidden_size=hidden, intermediate_size=int(2.6875 * hidden),
                         num_hidden_layers=blocks, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=4096)
    return LlamaForCausalLM(config).eval()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plain_forward(model, ids: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for i in range(0, ids.shape[0], batch_size):
            model(input_ids=ids[i:i + batch_size], use_cache=False)


def largest_host_copy(fn) -> dict:
    """Run ``fn`` under the torch profiler; the device-to-host copies it made (count, largest in bytes)."""
    if not torch.cuda.is_available():
        return {"checked": False, "why": "no CUDA device: nothing can go to the host"}
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        fn()
        torch.cuda.synchronize()
    sizes = []
    for event in prof.events():
        name = event.name.lower()
        if "memcpy" in name and ("dtoh" in name or "device -> host" in name or "d2h" in name):
            sizes.append(int(getattr(event, "device_memory_usage", 0) or 0) or _bytes_of(event))
    return {"checked": True, "copies": len(sizes), "largest_bytes": max(sizes, default=0)}


def _bytes_of(event) -> int:
    shapes = getattr(event, "input_shapes", None) or []
    total = 0
    for shape in shapes:
        n = 1
        for s in shape or []:
            n *= int(s)
        total = max(total, n * 4)
    return total


def check_prune(model, ids: torch.Tensor, name: str, num_remove: int, batch_size: int, repeats: int,
                folder: Path | None) -> dict:
    """prune / plain forward on the device, the host-copy check, and (with a folder) the streamed run."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    ids = ids.to(device)
    plain_forward(model, ids, batch_size)  # warm-up: kernels compiled, caches allocated
    forward_s = _median_s(lambda: plain_forward(model, ids, batch_size), repeats)

    def run_prune(m=None, **kw):
        return miprun.prune(m if m is not None else copy.deepcopy(model), ids, num_remove=num_remove,
                            batch_size=batch_size, progress=False, plots=False, **kw)

    run_prune()  # warm-up
    prune_s = _median_s(run_prune, repeats)
    state_bytes = ids.numel() * model.config.hidden_size * next(model.parameters()).element_size()
    copies = largest_host_copy(lambda: miprun.score_blocks(model, ids, max_run=num_remove, batch_size=batch_size,
                                                           progress=False))
    out = {"model": name, "tokens": int(ids.numel()), "forward_s": forward_s, "prune_s": prune_s,
           "prune_over_forward": prune_s / forward_s, "hidden_state_bytes": state_bytes, "host_copies": copies,
           "no_hidden_state_to_host": (not copies["checked"]) or copies["largest_bytes"] < state_bytes}
    if folder is not None:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            miprun.prune(str(folder), ids.cpu(), num_remove=num_remove, batch_size=batch_size, offload=True,
                         device=device, out_dir=Path(tmp) / "out", progress=False, plots=False)
            out["offload_prune_s"] = time.perf_counter() - t
            out["offload_over_forward"] = out["offload_prune_s"] / forward_s
    return out


def check_measure(model, ids: torch.Tensor, num_remove: int, batch_size: int, repeats: int) -> dict:
    """16 random plans measured in one sweep against one full forward pass per plan (the blocks bypassed)."""
    from miprun.evaluate.calibration_loss import CalibrationLoss
    from miprun.measure import Measurer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, ids = model.to(device), ids.to(device)
    blocks = model.config.num_hidden_layers
    g = torch.Generator().manual_seed(2)
    plans = [tuple(sorted(torch.randperm(blocks, generator=g)[:num_remove].tolist())) for _ in range(16)]
    sweep_s = _median_s(lambda: Measurer(model, ids, batch_size=batch_size).measure(plans), repeats)
    each_s = _median_s(lambda: [CalibrationLoss(model, ids, batch_size=batch_size)(p) for p in plans], repeats)
    measurer = Measurer(model, ids, batch_size=batch_size)
    measurer.measure(plans)
    return {"plans": len(set(plans)), "windows": int(ids.shape[0]), "sweep_s": sweep_s, "one_pass_per_plan_s": each_s,
            "speedup": each_s / sweep_s, "block_runs": measurer.block_runs,
            "naive_block_runs": measurer.naive_block_runs}


def run_prunes(smoke: bool, repeats: int) -> list[dict]:
    """The synthetic 32-block model (in memory and streamed) and SmolLM2 from its GGUF."""
    blocks, hidden, n, seq = (8, 64, 4, 32) if smoke else (32, 1024, 64, 1024)
    g = torch.Generator().manual_seed(0)
    results = []
    model = synthetic_model(blocks, hidden)
    ids = torch.randint(0, 2048, (n, seq), generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        results.append(check_prune(model, ids, f"synthetic {blocks} blocks, hidden {hidden}", 8 if not smoke else 2,
                                   8, repeats, Path(tmp)))
    results[-1]["measure"] = check_measure(model, ids[: max(1, n // 4)], 8 if not smoke else 2, 8, repeats)
    results.append(_smollm2(smoke, repeats))
    return results


def _smollm2(smoke: bool, repeats: int) -> dict:
    if not SMOLLM2.exists():
        return {"model": "SmolLM2-135M", "skipped": f"{SMOLLM2} not found"}
    try:
        from miprun.models.loading import load_model
        model = load_model(str(SMOLLM2))
    except (ImportError, ValueError, OSError) as exc:
        return {"model": "SmolLM2-135M", "skipped": f"cannot load the GGUF: {exc}"}
    n, seq = (2, 32) if smoke else (32, 512)
    ids = torch.randint(0, model.config.vocab_size, (n, seq), generator=torch.Generator().manual_seed(1))
    return check_prune(model, ids, "SmolLM2-135M (GGUF, dequantised)", 6, 8, repeats, None)


def table(report: dict) -> str:
    lines = [f"device: {report['machine'].get('device')}, driver {report['machine'].get('driver')}, "
             f"torch {report['machine']['versions'].get('torch')}, triton {report['machine']['versions'].get('triton')}"]
    for name, t in report["tests"].items():
        lines.append(f"tests {name:14s} {t['summary']}  ({t['seconds']:.0f} s)")
    lines.append("joint KSG (5+5, k=3)   metric     n         seconds  estimate  true   native s  kernel = native")
    for r in report["joint_ksg"]:
        native = f"{r['native_seconds']:8.2f}  {r['agrees_with_native']}" if "native_seconds" in r else "       -  -"
        lines.append(f"{'':22s} {r['metric']:10s} {r['n']:<9d} {r['seconds']:7.3f}  {r['estimate']:8.4f}  "
                     f"{r['true']:.3f}  {native}")
    lines.append("prune                                     forward s  prune s  ratio  offload ratio  no D2H state")
    for r in report["prune"]:
        if "skipped" in r:
            lines.append(f"{r['model']:40s}  skipped: {r['skipped']}")
            continue
        off = r.get("offload_over_forward")
        lines.append(f"{r['model']:40s}  {r['forward_s']:9.3f}  {r['prune_s']:7.3f}  {r['prune_over_forward']:5.2f}"
                     f"  {'-' if off is None else f'{off:13.2f}'}  {r['no_hidden_state_to_host']}")
    for r in report["prune"]:
        m = r.get("measure")
        if m:
            lines.append(f"measure {m['plans']} plans on {m['windows']} windows: one sweep {m['sweep_s']:.3f} s, one "
                         f"pass per plan {m['one_pass_per_plan_s']:.3f} s ({m['speedup']:.2f} x); block runs "
                         f"{m['block_runs']} of {m['naive_block_runs']}")
    return "\n".join(lines) + "\n\n" + report["bench"]["table"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="JSON file for every figure (default: $OUT/gpu_check.json or ./)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke-cpu", action="store_true", help="run on the CPU with small shapes (tests the script)")
    args = ap.parse_args()
    smoke = args.smoke_cpu
    if not smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke-cpu to test the script on the CPU", file=sys.stderr)
        return 2
    if smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    report = {"machine": machine(), "tests": run_tests(smoke), "bench": run_bench(smoke),
              "joint_ksg": run_joint_ksg(smoke, 1 if smoke else args.repeats),
              "prune": run_prunes(smoke, 1 if smoke else args.repeats)}
    out = Path(args.out or Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
