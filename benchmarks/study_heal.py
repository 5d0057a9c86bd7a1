"""Study 6: how much of the damage of a cut does a training-free heal repair, and at what cost?

For a real model (SmolLM2-135M-Instruct from its Q4_1 GGUF, or Gemma-3-270M from its
Q4_K_M GGUF with ``--model gemma3``), loaded dequantised in float32 on the CPU, and the
plans of several selectors at several block counts, it measures held-out perplexity
(WikiText-2 test and C4, non-overlapping windows; Gemma gets a BOS at the start of each
window, calibration included) of the pruned model unhealed and healed with each method of
:func:`miprun.heal.fit.heal_cuts` (``scale``; ``linear`` fitted sequentially or on the
dense model; ``linear-refitK`` also refits the next K kept blocks after each cut; optionally
other ridges), and optionally zero-shot accuracy (``--tasks``),
each next to the dense model. Calibration: 32 x 512 tokens of WikiText-2 valid (seed 0),
as ``miprun prune`` draws them (``--n-samples`` other counts); the heal fits on the first 7/8
of the windows and reports its residual on the last 1/8 (``heal_held_out`` 0.125).

Plans: the ones ``benchmarks/study_head_to_head.py`` chose (``--plans-from`` its JSON), or
``--plan NAME=b,b,b`` (repeatable).

Run: ``PYTHONPATH=python:benchmarks python benchmarks/study_heal.py --plans-from /tmp/study_smollm2.json
--out /tmp/study_heal.json``. The JSON is rewritten after every measurement.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from pathlib import Path

import torch
from miprun.evaluate.calibration_loss import bypassed, mean_next_token_loss
from miprun.evaluate.summary import read_text, tokenize_text
from miprun.heal.fit import heal_cuts
from miprun.heal.options import HealOptions
from miprun.models.loading import load_model, load_tokenizer
from study_common import DATA, TEXT, calibration_ids, machine, markdown, prefix_bos, token_stream, windows

MODELS = {
    "smollm2": (DATA / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf", False),
    "gemma3": (Path.home() / ".cache" / "miprun" / "models" / "gemma-3-270m" / "gemma-3-270m-q4_k_m.gguf", True),
}
WIKI_VALID = TEXT / "wikitext-2-raw" / "wiki.valid.raw"
WIKI_TEST = TEXT / "wikitext-2-raw" / "wiki.test.raw"
C4 = TEXT / "c4" / "c4_demo_300docs.json"
#: name -> HealOptions keywords (None: unhealed)
VARIANTS = {"none": None, "scale": dict(heal="scale"), "linear": dict(heal="linear"),
            "linear-dense": dict(heal="linear", heal_fit="dense"),
            "linear-relative": dict(heal="linear", heal_objective="relative"),
            "scale-relative": dict(heal="scale", heal_objective="relative")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--out", default="/tmp/study_heal.json")
    ap.add_argument("--plans-from", default=None, help="a benchmarks/study_head_to_head.py JSON")
    ap.add_argument("--selectors", default="fast_block_select,shortgpt,sleb")
    ap.add_argument("--counts", default="6,9")
    ap.add_argument("--plan", action="append", default=[], metavar="NAME=b,b,...")
    ap.add_argument("--variants", default="none,scale,linear,linear-dense")
    ap.add_argument("--ridges", default="", help="extra linear ridges to try, e.g. 1e-2,1e-1")
    ap.add_argument("--objective", default="mse", help="objective of the --ridges variants")
    ap.add_argument("--n-samples", type=int, default=32, help="calibration windows of 512 tokens (heal fits 7/8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wiki-windows", type=int, default=16)
    ap.add_argument("--c4-windows", type=int, default=8)
    ap.add_argument("--tasks", default="", help="zero-shot tasks (lm-eval names), e.g. piqa,arc_easy")
    ap.add_argument("--limit", type=int, default=None, help="zero-shot items per task")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out: dict = {"machine": machine(args.threads), "platform": platform.platform(), "args": vars(args),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": []}
    path = Path(args.out)

    def save() -> None:
        out["seconds_total"] = time.perf_counter() - t0
        path.write_text(json.dumps(out, indent=1))

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)

    gguf, needs_bos = MODELS[args.model]
    model = load_model(gguf, dtype=torch.float32).eval()
    tok = load_tokenizer(gguf)
    bos = tok.bos_token_id if needs_bos else None
    calib = calibration_ids(WIKI_VALID, tok, n_samples=args.n_samples, seq_len=512, seed=0)
    calib = prefix_bos(calib, bos)  # as in the head-to-head study
    fit_ids, held_ids = HealOptions(heal="linear").split(calib)  # the last 1/8 held out, as prune does
    texts = {"wikitext2": windows(tokenize_text(read_text(WIKI_TEST), tok), args.wiki_windows, 512, bos),
             "c4": windows(token_stream(C4, tok), args.c4_windows, 512, bos)}
    tasks = [t for t in args.tasks.split(",") if t]

    def measure(m, removed) -> dict:
        res = {}
        with bypassed(m, removed):
            for name, ids in texts.items():
                res[name] = math.exp(mean_next_token_loss(m, ids, batch_size=8)[0])
            if tasks:
                from miprun.evaluate.zeroshot import evaluate_tasks
                acc = evaluate_tasks(m, tok, tasks, limit=args.limit, batch_size=8)
                res["zeroshot"] = {k: v.to_dict() for k, v in acc.items()}
        return res

    # one forward pass over the calibration tokens, the cost unit of the heal
    t = time.perf_counter()
    mean_next_token_loss(model, calib, batch_size=8)
    out["forward_pass_s"] = time.perf_counter() - t
    out["dense"] = measure(model, [])
    log(f"dense {out['dense']}")
    save()

    plans: dict[str, list[int]] = {}
    if args.plans_from:
        recorded = json.loads(Path(args.plans_from).read_text())["plans"]
        for sel in args.selectors.split(","):
            for n in args.counts.split(","):
                plans[f"{sel}@{n}"] = recorded[sel][n]["removed"]
    for spec in args.plan:
        name, _, blocks = spec.partition("=")
        plans[name] = [int(b) for b in blocks.split(",")]
    variants = {v: _variant(v) for v in args.variants.split(",")}
    for r in (float(x) for x in args.ridges.split(",") if x):
        variants[f"linear-{args.objective}-ridge{r:g}"] = dict(heal="linear", heal_ridge=r,
                                                              heal_objective=args.objective)
    seen: dict[tuple, dict] = {}
    for name, removed in plans.items():
        for variant, kw in variants.items():
            key = (tuple(removed), variant)
            if key in seen:
                out["runs"].append({**seen[key], "plan": name})
                continue
            m, heal = model, None
            if kw is not None:
                m = copy.deepcopy(model)
                heal = heal_cuts(m, removed, fit_ids, held_ids, options=HealOptions(**kw), batch_size=8).report
            run = {"plan": name, "removed": removed, "variant": variant, "heal": heal, **measure(m, removed)}
            seen[key] = run
            out["runs"].append(run)
            del m
            log(f"{name} {variant}: wikitext2 {run['wikitext2']:.2f} c4 {run['c4']:.2f}"
                + (f" heal {heal['seconds']:.1f} s" if heal else ""))
            save()
    print(report(out))


def _variant(name: str) -> dict | None:
    """A name of :data:`VARIANTS`, or one with ``-refitK`` after it (``linear-refit2``: also refit 2 blocks)."""
    base, _, k = name.partition("-refit")
    if k:
        return dict(VARIANTS[base], heal_refit=int(k))
    return VARIANTS[name]


def report(out: dict) -> str:
    """Perplexity per plan and variant, with the share of the log-perplexity gap to dense that the heal closes."""
    dense = out["dense"]
    variants = list(dict.fromkeys(r["variant"] for r in out["runs"]))
    rows = []
    for plan in dict.fromkeys(r["plan"] for r in out["runs"]):
        runs = {r["variant"]: r for r in out["runs"] if r["plan"] == plan}
        base = runs.get("none")
        row = [plan, " ".join(map(str, runs[variants[0]]["removed"]))]
        for v in variants:
            r = runs.get(v)
            if r is None:
                row.append("-")
                continue
            cell = f"{r['wikitext2']:.1f} / {r['c4']:.1f}"
            if base is not None and v != "none":
                closed = [(math.log(base[t]) - math.log(r[t])) / (math.log(base[t]) - math.log(dense[t]))
                          for t in ("wikitext2", "c4")]
                cell += f" ({closed[0]:+.0%} / {closed[1]:+.0%})"
            row.append(cell)
        rows.append(row)
    return markdown(["plan", "removed"] + variants, rows)


if __name__ == "__main__":
    main()
