"""Study 10: how far past the closed form does tuning the heal's maps against the unpruned model go?

For a real model and the plans of a criterion study (``--plans-from`` a
``benchmarks/study_criterion.py`` JSON: its ``default`` row and another, at every count),
each plan is measured unhealed, healed with the closed-form ``linear`` maps, and healed with
the maps tuned (:func:`miprun.heal.tune.tune_maps`) for each number of ``--steps`` (and each
``--lrs``): held-out perplexity on WikiText-2 test, C4 and PTB test (16 windows of 512 tokens
each, every plan measured by one :class:`~miprun.measure.Measurer` per text), the share of the
log-perplexity gap to the unpruned model each heal closes, and the time of the heal against
one plain forward pass over the calibration windows. ``--tasks`` adds zero-shot accuracy (the
first ``--limit`` items of each task) of the dense model and of every heal of the ``--zs-plan``
plans, the heal folded into a copy of the model.

Calibration: 32 windows x 512 tokens of WikiText-2 valid (seed 0), split as ``prune`` splits
them: the maps fitted (and tuned) on the first 24, checked on the last 8. Gemma gets a BOS
token at the start of every window.

Run: ``PYTHONPATH=python:benchmarks python benchmarks/study_heal_tune.py --model smollm2
--plans-from /tmp/criterion_smollm2.json --out /tmp/heal_tune_smollm2.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from miprun.calibration.split import split_windows
from miprun.evaluate.zeroshot import evaluate_tasks
from miprun.heal.fit import heal_cuts
from miprun.heal.options import HealOptions
from miprun.heal.tune import tune_maps
from miprun.measure import Candidate, Measurer
from miprun.models.loading import load_model, load_tokenizer
from miprun.output.surgery import remove_blocks
from study_common import TEXT, calibration_ids, machine, prefix_bos
from study_criterion import MODELS, eval_windows, geometric_mean


def plain_forward_s(model, ids: torch.Tensor, batch_size: int) -> float:
    t = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, ids.shape[0], batch_size):
            model(input_ids=ids[lo:lo + batch_size], use_cache=False)
    return time.perf_counter() - t


def gap_closed(dense: float, unhealed: float, healed: float) -> float:
    """Share of the log-perplexity gap to the unpruned model a heal closes."""
    return (math.log(unhealed) - math.log(healed)) / (math.log(unhealed) - math.log(dense))


def heals_of(model, removed, split, calib, steps_list, lrs, batch_size) -> dict:
    """Every heal of one plan: name -> (Healing or None, its report, seconds)."""
    out = {"none": (None, {}, 0.0)}
    t = time.perf_counter()
    closed = heal_cuts(model, removed, split.rows(calib, "heal_fit"), split.rows(calib, "heal_check"),
                       options=HealOptions(heal="linear"), fold=False)
    out["linear"] = (closed, closed.report, time.perf_counter() - t)
    for lr in lrs:
        for steps in steps_list:
            healing = copy.deepcopy(closed)
            t = time.perf_counter()
            report = tune_maps(model, removed, healing, split.rows(calib, "heal_fit"),
                               split.rows(calib, "heal_check"), steps=steps, lr=lr, batch_size=batch_size)
            out[f"tune{steps}@{lr:g}"] = (healing, report, out["linear"][2] + time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--plans-from", required=True, help="a benchmarks/study_criterion.py JSON of the same model")
    ap.add_argument("--rows", default="default:kl,sleb", help="which rows' plans (method names)")
    ap.add_argument("--counts", default=None, help="default: every count of the JSON")
    ap.add_argument("--steps", default="25,50,100")
    ap.add_argument("--lrs", default="1e-3")
    ap.add_argument("--batch-size", type=int, default=4, help="windows per tuning step")
    ap.add_argument("--tasks", default="", help="zero-shot tasks, e.g. piqa,arc_easy,arc_challenge,hellaswag,"
                                                "winogrande,boolq")
    ap.add_argument("--limit", type=int, default=250)
    ap.add_argument("--zs-plan", default="default:kl@6", help="ROW@COUNT plans evaluated zero-shot (comma-separated)")
    ap.add_argument("--task-batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    path, needs_bos, _ = MODELS[args.model]
    model = load_model(path, dtype=torch.float32).eval()
    tok = load_tokenizer(path)
    bos = tok.bos_token_id if needs_bos else None
    calib = prefix_bos(calibration_ids(TEXT / "wikitext-2-raw" / "wiki.valid.raw", tok, n_samples=32, seq_len=512,
                                       seed=0), bos)
    split = split_windows(32, 0.25, score_held_back=False)
    texts = eval_windows(tok, 16, 512, bos)
    measurers = {name: Measurer(model, ids, batch_size=8) for name, ids in texts.items()}
    forward_s = plain_forward_s(model, calib, 8)
    lines = json.loads(Path(args.plans_from).read_text())["lines"]
    counts = [int(c) for c in args.counts.split(",")] if args.counts else sorted({x["n"] for x in lines if x["n"]})
    plans = {(x["method"], x["n"]): x["removed"] for x in lines if x["method"] in args.rows.split(",")
             and x["n"] in counts}
    steps_list = [int(s) for s in args.steps.split(",") if s]
    lrs = [float(s) for s in args.lrs.split(",") if s]
    out = {"machine": machine(args.threads), "args": vars(args), "forward_s": forward_s, "runs": [], "zeroshot": {}}
    out_path = Path(args.out or f"/tmp/heal_tune_{args.model}.json")
    dense = {name: m.measure([()])[0].perplexity for name, m in measurers.items()}
    out["dense"] = dense
    zs_wanted = set(args.zs_plan.split(",")) if args.tasks else set()
    if zs_wanted:
        out["zeroshot"]["dense"] = evaluate_tasks(model, tok, args.tasks.split(","), limit=args.limit,
                                                  batch_size=args.task_batch_size)
        out["zeroshot"]["dense"] = {k: r.metrics.get("acc") for k, r in out["zeroshot"]["dense"].items()}
    for (row, n), removed in sorted(plans.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for name, (healing, report, seconds) in heals_of(model, removed, split, calib, steps_list, lrs,
                                                         args.batch_size).items():
            cand = Candidate(tuple(removed)) if healing is None else healing.candidate(removed, f"{name}:{removed}")
            ppl = {text: m.measure([cand])[0].perplexity for text, m in measurers.items()}
            entry = {"row": row, "n": n, "removed": removed, "heal": name, "perplexity": ppl,
                     "geomean": geometric_mean(ppl.values()), "seconds": seconds, "over_forward": seconds / forward_s,
                     "tune": report.get("held_out_kl") if "steps" in report else None}
            out["runs"].append(entry)
            if f"{row}@{n}" in zs_wanted:
                pruned = copy.deepcopy(model)
                if healing is not None:
                    healing.fold(pruned)
                remove_blocks(pruned, removed)
                res = evaluate_tasks(pruned, tok, args.tasks.split(","), limit=args.limit,
                                     batch_size=args.task_batch_size)
                out["zeroshot"][f"{row}@{n}/{name}"] = {k: r.metrics.get("acc") for k, r in res.items()}
                del pruned
            print(f"[{time.perf_counter() - t0:7.1f} s] {row}@{n} {name}: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in ppl.items()), flush=True)
            out["seconds_total"] = time.perf_counter() - t0
            out_path.write_text(json.dumps(out, indent=1, default=str))
    _print(out, dense)


def _print(out: dict, dense: dict) -> None:
    texts = list(dense)
    print(out["machine"])
    print("| plan | removed | heal | " + " | ".join(texts) + " | geomean | gap closed " + " / ".join(texts)
          + " | heal s (/ forward) |")
    print("|---|---|---|" + "---|" * (len(texts) + 3))
    base = {}
    for r in out["runs"]:
        key = (r["row"], r["n"])
        if r["heal"] == "none":
            base[key] = r["perplexity"]
        closed = " / ".join(f"{100 * gap_closed(dense[t], base[key][t], r['perplexity'][t]):.0f} %" for t in texts)
        print(f"| {r['row']}@{r['n']} | {' '.join(map(str, r['removed']))} | {r['heal']} | "
              + " | ".join(f"{r['perplexity'][t]:.1f}" for t in texts)
              + f" | {r['geomean']:.1f} | {closed} | {r['seconds']:.1f} ({r['over_forward']:.1f} x) |")
    for name, acc in out["zeroshot"].items():
        print(f"zero-shot {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
              + f"; mean {sum(acc.values()) / len(acc):.4f}")


if __name__ == "__main__":
    main()
