"""Study 7: zero-shot accuracy of the plans a head-to-head study chose, next to the dense model.

Reads the plans of ``benchmarks/study_head_to_head.py`` (its JSON), evaluates every
distinct plan once (blocks bypassed, as ``remove_blocks`` makes the model) on the offline
lm-evaluation-harness tasks of ``miprun.evaluate.zeroshot`` (PIQA, ARC-Easy,
ARC-Challenge, HellaSwag, WinoGrande, BoolQ by default), the first ``--limit`` items of
each, and prints accuracy per task and the mean, per selector and block count.

Run: ``PYTHONPATH=python:benchmarks python benchmarks/study_zeroshot.py --plans-from /tmp/h2h_smollm2.json
--model smollm2 --limit 100 --out /tmp/zs_smollm2.json``. The JSON is rewritten after every plan.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from miprun.evaluate.calibration_loss import bypassed
from miprun.evaluate.zeroshot import evaluate_tasks
from miprun.models.loading import load_model, load_tokenizer
from study_common import machine, markdown
from study_head_to_head import MODELS

TASKS = "piqa,arc_easy,arc_challenge,hellaswag,winogrande,boolq"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--plans-from", required=True)
    ap.add_argument("--selectors", default=None, help="default: every selector of the JSON")
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--counts", default=None, help="block counts to evaluate, e.g. 6,9 (default: every one)")
    ap.add_argument("--no-dense", action="store_true",
                    help="skip the dense model (measured by another run over the same items)")
    ap.add_argument("--batch-size", type=int, default=16,
                    help="lm-eval batch; lower it for large vocabularies (Gemma-3's 262k-word logits: 4)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_path = Path(args.out or f"/tmp/zs_{args.model}.json")
    t0 = time.perf_counter()
    path = MODELS[args.model][0]
    model = load_model(path, dtype=torch.float32).eval()
    tok = load_tokenizer(path)
    plans = json.loads(Path(args.plans_from).read_text())["plans"]
    selectors = args.selectors.split(",") if args.selectors else list(plans)
    out = {"machine": machine(args.threads), "platform": platform.platform(), "args": vars(args),
           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "acc": {}, "plans": {}}
    tasks = args.tasks.split(",")
    cache: dict[tuple, dict] = {}

    def measure(removed) -> dict:
        key = tuple(sorted(removed))
        if key not in cache:
            with bypassed(model, key):
                res = evaluate_tasks(model, tok, tasks, limit=args.limit, batch_size=args.batch_size)
            cache[key] = {name.removeprefix("miprun_"): r.metrics.get("acc") for name, r in res.items()}
        return cache[key]

    if not args.no_dense:
        out["acc"]["dense"] = measure(())
        print(f"[{time.perf_counter() - t0:7.1f} s] dense {out['acc']['dense']}", flush=True)
    counts = args.counts.split(",") if args.counts else None
    for sel in selectors:
        for n, entry in plans[sel].items():
            if counts is not None and n not in counts:
                continue
            out["plans"][f"{sel}@{n}"] = entry["removed"]
            out["acc"][f"{sel}@{n}"] = measure(entry["removed"])
            print(f"[{time.perf_counter() - t0:7.1f} s] {sel}@{n} {out['acc'][f'{sel}@{n}']}", flush=True)
            out["seconds_total"] = time.perf_counter() - t0
            out_path.write_text(json.dumps(out, indent=1))
    rows = [[k] + [v.get(t.removeprefix("miprun_")) for t in tasks] + [statistics.mean(v.values())]
            for k, v in out["acc"].items()]
    print(markdown(["plan"] + tasks + ["mean"], rows))


if __name__ == "__main__":
    main()
