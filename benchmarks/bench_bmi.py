"""BMI's benchmark: miprun's joint estimators beside BMI's own on its 40 tasks.

Question: on the standard benchmark of MI estimators (BMI, "Beyond Normal", Czyz et al.,
NeurIPS 2023; ``bmi.BENCHMARK_TASKS``: X and Y of 1 to 50 dimensions, known MI), how close
to the truth and how fast are miprun's ``reduction="joint"`` estimators, beside BMI's KSG
and CCA estimators run on the same samples in the same process? Joint KSG runs in both
norms within X and within Y (Euclidean, BMI KSG's default, and the max-norm), as BMI's
KSG does, so the evidence for miprun's default norm comes from the same run.

Each task is sampled by BMI (``task.sample(n, seed)``) for every seed; every estimator
estimates every sample, through BMI's interface (miprun's through
``miprun.mi.bmi_adapter.MiprunEstimator``: array conversion included in its time). Times
are wall times of one ``estimate(x, y)`` call, after one untimed warm-up call of each
estimator on a small sample. Per estimator:

- tasks it runs: the tasks whose every seed gave an estimate (miprun's joint histogram
  refuses dx + dy > 4; projection needs dx = dy; a refusal is not an error);
- mean |error|: over the tasks it runs, the mean over seeds of |estimate - true MI|, nats;
- mean log2 ratio: the same mean of log2(max(estimate, 0.001) / true MI) (0: unbiased;
  -1: half the truth; an estimate clipped at 0 counts as 0.001 nats);
- median time: over the tasks, of the median over seeds of the time per estimate;
- speed-up: over the tasks, the median of BMI KSG's time / the estimator's time, both
  measured on the same samples in this run.

Run it in an environment that holds BMI and miprun (README, "Benchmarking against BMI"):

    OMP_NUM_THREADS=2 ../bmi-venv/bin/python benchmarks/bench_bmi.py --n 5000 --seeds 0 1 2 --out bmi.json

Targets: joint KSG's mean |error| (miprun's default norm) within 0.02 nats of BMI's KSG
(its default) at the same k, and at least 20x faster per estimate (median over the tasks);
joint Gaussian's mean |error| within 0.01 nats of BMI's CCA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu_hist import machine_header, print_table  # noqa: E402

try:
    import bmi
    from bmi.estimators import CCAMutualInformationEstimator, KSGEnsembleFirstEstimator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise SystemExit(f"bench_bmi.py needs BMI (benchmark-mi) and miprun in one environment: {exc}. "
                     "See the README, 'Benchmarking against BMI'.") from None

from miprun.mi.bmi_adapter import MiprunEstimator  # noqa: E402
from miprun.mi.ksg import DEFAULT_METRICS  # noqa: E402

LOG_FLOOR = 1e-3  # nats: where an estimate of 0 (KSG clips) is put for the log2 ratio
BASELINE = "BMI KSG"
JOINT_KSG = {"euclidean": "miprun ksg joint", "chebyshev": "miprun ksg joint, max-norm"}


def estimators(k: int, seed: int) -> dict[str, object]:
    """Every estimator of the run by label: BMI's (KSG with its default metric, Euclidean within
    X and within Y; KSG with the max-norm in both; CCA), miprun's joint ones (KSG in both norms,
    each named explicitly), and miprun's old multivariate KSG."""
    return {
        BASELINE: KSGEnsembleFirstEstimator(neighborhoods=(k,)),
        "BMI KSG, max-norm": KSGEnsembleFirstEstimator(neighborhoods=(k,), metric_x="chebyshev"),
        "BMI CCA": CCAMutualInformationEstimator(),
        **{label: MiprunEstimator("ksg", k=k, seed=seed, metric=metric) for metric, label in JOINT_KSG.items()},
        "miprun gaussian joint": MiprunEstimator("gaussian"),
        "miprun hist joint": MiprunEstimator("hist"),
        "miprun ksg projection": MiprunEstimator("ksg", reduction="projection", k=k, seed=seed),
    }


def refused(exc: Exception) -> bool:
    """A documented refusal (joint histogram of many columns, projection of unequal widths), not a failure."""
    text = str(exc)
    return "dx + dy <=" in text or "need the same number of columns" in text


def run(tasks: dict, ests: dict, n: int, seeds: list[int]) -> list[dict]:
    rng = np.random.default_rng(0)
    warm_x = rng.standard_normal((300, 2))
    warm_y = warm_x[:, ::-1] + rng.standard_normal((300, 2))
    for est in ests.values():  # first calls load code and caches: not timed
        est.estimate(warm_x, warm_y)
    records = []
    for task_id, task in tasks.items():
        for seed in seeds:
            x, y = (np.asarray(a) for a in task.sample(n, seed))
            for label, est in ests.items():
                start = time.perf_counter()
                try:
                    value, status = float(est.estimate(x, y)), "ok"
                except ValueError as exc:
                    value, status = math.nan, ("refused: " if refused(exc) else "error: ") + str(exc)[:200]
                seconds = time.perf_counter() - start
                records.append({"task": task_id, "dim_x": task.dim_x, "dim_y": task.dim_y,
                                "true": float(task.mutual_information), "seed": seed, "estimator": label,
                                "estimate": value, "seconds": seconds, "status": status})
            done = [r for r in records if r["task"] == task_id and r["seed"] == seed]
            print(f"  {task_id} seed {seed}: " + ", ".join(f"{r['estimator']} {r['estimate']:.3f} ({r['seconds']:.2f} s)"
                                                           for r in done), file=sys.stderr, flush=True)
    return records


def per_task(records: list[dict], label: str) -> dict[str, dict]:
    """task -> mean estimate, mean |error|, mean log2 ratio, median seconds over seeds (tasks every seed ran)."""
    out = {}
    for task in dict.fromkeys(r["task"] for r in records):
        rs = [r for r in records if r["task"] == task and r["estimator"] == label]
        if not rs or any(r["status"] != "ok" for r in rs):
            continue
        true = rs[0]["true"]
        est = [r["estimate"] for r in rs]
        out[task] = {"estimate": statistics.fmean(est), "abs_error": statistics.fmean(abs(e - true) for e in est),
                     "log2_ratio": statistics.fmean(math.log2(max(e, LOG_FLOOR) / true) for e in est),
                     "seconds": statistics.median(r["seconds"] for r in rs)}
    return out


def summary(records: list[dict], labels: list[str], n_tasks: int) -> tuple[list[tuple], dict]:
    base = per_task(records, BASELINE)
    rows, figures = [], {}
    for label in labels:
        t = per_task(records, label)
        if not t:
            rows.append((label, f"0 / {n_tasks}", "-", "-", "-", "-"))
            continue
        mae = statistics.fmean(v["abs_error"] for v in t.values())
        log2 = statistics.fmean(v["log2_ratio"] for v in t.values())
        median_s = statistics.median(v["seconds"] for v in t.values())
        speed = statistics.median(base[k]["seconds"] / v["seconds"] for k, v in t.items() if k in base)
        figures[label] = {"tasks": len(t), "mean_abs_error": mae, "mean_log2_ratio": log2, "median_seconds": median_s,
                          "median_speedup_vs_bmi_ksg": speed}
        rows.append((label, f"{len(t)} / {n_tasks}", f"{mae:.3f}", f"{log2:+.3f}", f"{median_s:.3g}", f"{speed:.1f}x"))
    return rows, figures


WIDTHS = (("dx + dy <= 10", lambda w: w <= 10), ("dx + dy >= 50", lambda w: w >= 50))


def width_rows(records: list[dict], labels: list[str]) -> list[tuple]:
    """Mean |error| and median seconds per estimator over the tasks of few and of many columns."""
    width = {r["task"]: r["dim_x"] + r["dim_y"] for r in records}
    rows = []
    for label in labels:
        t = per_task(records, label)
        cells = []
        for _, keep in WIDTHS:
            sel = [v for task, v in t.items() if keep(width[task])]
            cells += [f"{statistics.fmean(v['abs_error'] for v in sel):.3f}" if sel else "-",
                      f"{statistics.median(v['seconds'] for v in sel):.3g}" if sel else "-"]
        rows.append((label, *cells))
    return rows


def task_rows(records: list[dict], labels: list[str]) -> list[tuple]:
    tables = {label: per_task(records, label) for label in labels}
    rows = []
    for task in dict.fromkeys(r["task"] for r in records):
        r0 = next(r for r in records if r["task"] == task)
        cells = [f"{tables[lab][task]['estimate']:.3f}" if task in tables[lab] else "-" for lab in labels]
        times = [f"{tables[lab][task]['seconds']:.3g}" if task in tables[lab] else "-"
                 for lab in (BASELINE, *JOINT_KSG.values()) if lab in tables]
        rows.append((task, f"{r0['dim_x']}x{r0['dim_y']}", f"{r0['true']:.3f}", *cells, *times))
    return rows


def targets(figures: dict) -> list[str]:
    def gap(a, b):
        return abs(figures[a]["mean_abs_error"] - figures[b]["mean_abs_error"])

    lines = []
    ours = JOINT_KSG[DEFAULT_METRICS["joint"]]  # the norm mutual_information uses by default
    if {ours, BASELINE} <= set(figures):
        g = gap(ours, BASELINE)
        lines.append(f"joint KSG ({ours}, the default) mean |error| within 0.02 of BMI KSG's: "
                     f"{figures[ours]['mean_abs_error']:.3f} vs {figures[BASELINE]['mean_abs_error']:.3f}, gap {g:.3f} "
                     f"({'met' if g <= 0.02 else 'missed'})")
        s = figures[ours]["median_speedup_vs_bmi_ksg"]
        lines.append(f"joint KSG (the default) >= 20x faster than BMI KSG (median over tasks): {s:.1f}x "
                     f"({'met' if s >= 20 else 'missed'})")
    for metric, label in JOINT_KSG.items():
        theirs = BASELINE if metric == "euclidean" else "BMI KSG, max-norm"
        if {label, theirs} <= set(figures):
            lines.append(f"{label} vs {theirs} (the same norm): gap {gap(label, theirs):.3f}")
    if {"miprun gaussian joint", "BMI CCA"} <= set(figures):
        g = gap("miprun gaussian joint", "BMI CCA")
        lines.append(f"joint Gaussian mean |error| within 0.01 of BMI CCA's: gap {g:.4f} ({'met' if g <= 0.01 else 'missed'})")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="samples per estimate (default 5000)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds (default 0 1 2)")
    ap.add_argument("--k", type=int, default=5, help="KSG neighbours for BMI and miprun alike (default 5)")
    ap.add_argument("--tasks", nargs="*", default=None, help="task ids (default: all of bmi.BENCHMARK_TASKS)")
    ap.add_argument("--estimators", nargs="*", default=None, help="labels to run (default: all)")
    ap.add_argument("--out", default=None, help="write every estimate and the summary to this JSON file")
    args = ap.parse_args()

    tasks = {t: bmi.BENCHMARK_TASKS[t] for t in (args.tasks or bmi.BENCHMARK_TASKS)}
    ests = estimators(args.k, seed=0)
    if args.estimators:
        ests = {label: ests[label] for label in args.estimators}
    machine_header(f"BMI benchmark: {len(tasks)} tasks, n = {args.n}, seeds {args.seeds}, k = {args.k}")
    import sklearn
    print(f"benchmark-mi {_version('benchmark-mi')}, scikit-learn {sklearn.__version__}, "
          f"jax {_version('jax')}, miprun {_version('miprun')}")
    start = time.perf_counter()
    records = run(tasks, ests, args.n, args.seeds)
    labels = list(ests)
    rows, figures = summary(records, labels, len(tasks))
    print(f"\n## Summary ({len(args.seeds)} seeds a task; speed-up: median over tasks of BMI KSG time / time)\n")
    print_table(rows, ("estimator", "tasks it runs", "mean abs error (nats)", "mean log2 ratio",
                       "median s / estimate", "speed-up vs BMI KSG"))
    width = {r["task"]: r["dim_x"] + r["dim_y"] for r in records}
    counts = [sum(keep(w) for w in width.values()) for _, keep in WIDTHS]
    print(f"\n## By width ({counts[0]} tasks of dx + dy <= 10, {counts[1]} of dx + dy >= 50; tasks each estimator runs)\n")
    print_table(width_rows(records, labels), ("estimator", *(f"{name} {what}" for name, _ in WIDTHS
                                                             for what in ("mean abs error", "median s"))))
    print("\n## Every task (mean estimate over seeds; '-': refused; last columns: median s / estimate)\n")
    timed = [lab for lab in (BASELINE, *JOINT_KSG.values()) if lab in labels]
    print_table(task_rows(records, labels), ("task", "dims", "true MI", *labels, *(f"{lab} s" for lab in timed)))
    print()
    for line in targets(figures):
        print(line)
    failures = [r for r in records if r["status"].startswith("error")]
    print(f"errors (not refusals): {len(failures)}; wall time {time.perf_counter() - start:.0f} s; "
          f"load average at the end: {os.getloadavg()[0]:.2f}")
    for r in failures[:10]:
        print(f"  {r['estimator']} on {r['task']} seed {r['seed']}: {r['status']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"n": args.n, "seeds": args.seeds, "k": args.k, "summary": figures,
                                              "records": records}, indent=1, allow_nan=True) + "\n")
        print(f"wrote {args.out}")
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
