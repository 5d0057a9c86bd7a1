"""Study 5: which selector gives the lowest held-out perplexity on a real model, at what cost?

Models (``--model``): SmolLM2-135M-Instruct (Llama, 30 blocks) from its Q4_1 GGUF file,
Gemma-3-270M (18 blocks, sliding and full attention) from its Q4_K_M GGUF file (fetched by
``../shared/data/fetch-gemma3-270m.sh`` into ``~/.cache/miprun/models``), both loaded
dequantised in float32 on the CPU, or stories260K (5 blocks). Gemma gets a BOS token at
the start of every window (calibration and evaluation): without it its perplexity is
meaningless. Calibration: 32 windows x 512 tokens of WikiText-2 valid (seed 0),
drawn as ``miprun.calibration.windows`` does. The first ``32 - held`` windows are scored;
the last ``held`` windows (``--held``, default 4) are held back and are what SLEB and
``verify`` measure their calibration loss on (one ``CalibrationLoss`` each, so that their
forward passes are counted apart). The pipeline holds back ``max(1, n // 4)`` = 8 windows
for ``verify``; fewer here, to fit SLEB's O(T N) passes into a CPU time box.

Each estimator is scored once and its table serves every ratio: hist pooled (runs, with
the cosine and angular companion tables of the same pass), gaussian pooled (runs), cosine,
angular (runs), and for the single-block ranking also ksg pooled and hist and gaussian
per_dim. At about
10/20/30 % of the blocks removed (SmolLM2 3/6/9, Gemma 2/4/5, stories260K 1/2):
fast_block_select on hist and on gaussian, optimal and greedy on the hist table, ShortGPT
(cosine), Gromov (angular), a random plan (seed 0), SLEB, and ``verify`` K = 2 and 4
(fast_block_select's K best plus the portfolio fast_block_select/optimal/greedy/ShortGPT/
Gromov, on the hist table). Each plan is evaluated by bypassing its blocks
(``miprun.evaluate.calibration_loss.bypassed``, the model ``remove_blocks`` makes) on
held-out text: WikiText-2 test (16 x 512 windows) and C4 (up to 16 x 512). Single-block
truth: the perplexity with each one block removed (WikiText-2 test, 8 x 512), against which
every estimator's single-block score is ranked (Spearman).

Run: ``PYTHONPATH=python:benchmarks python benchmarks/study_head_to_head.py --model smollm2
--out /tmp/h2h_smollm2.json`` (about 30 minutes on 2 CPU threads; ``--sleb-from`` an earlier
JSON of the same model and protocol reuses its SLEB plans). The JSON is rewritten after
every step, so an interrupted run keeps what it measured.

``--reverify EARLIER`` re-runs only ``verify`` on a finished run: it scores the hist table
again with the companion tables the pipeline now scores (``companion_runs``), builds the
``verify2``/``verify4`` plans (one loss oracle for both; a plan measured for K = 2 is not
measured again for K = 4), and measures only the plans whose held-out perplexity the earlier
run did not (same windows; the other plans, the SLEB plans and the single-block truth are
carried over).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import miprun
import numpy as np
import torch
from miprun.evaluate.calibration_loss import CalibrationLoss, bypassed, mean_next_token_loss
from miprun.evaluate.perplexity import perplexity
from miprun.evaluate.summary import read_text, tokenize_text
from miprun.models.loading import load_model, load_tokenizer
from miprun.selection.select import companion_runs
from study_common import DATA, TEXT, calibration_ids, machine, markdown, prefix_bos, token_stream, windows

#: name -> (model path, BOS per window, default block counts)
MODELS = {
    "smollm2": (DATA / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf", False, "3,6,9"),
    "gemma3": (Path.home() / ".cache" / "miprun" / "models" / "gemma-3-270m" / "gemma-3-270m-q4_k_m.gguf", True,
               "2,4,5"),
    "stories": (DATA / "models" / "stories260K-hf", False, "1,2"),
}
WIKI_VALID = TEXT / "wikitext-2-raw" / "wiki.valid.raw"
WIKI_TEST = TEXT / "wikitext-2-raw" / "wiki.test.raw"
C4 = TEXT / "c4" / "c4_demo_300docs.json"
SCORE_ONLY = ("fast_block_select", "fbs_gaussian", "optimal", "greedy", "shortgpt", "gromov", "random")
SELECTORS = SCORE_ONLY + ("sleb", "verify2", "verify4")


class Evaluator:
    """Held-out perplexity with a set of blocks bypassed, each (text, set) measured once."""

    def __init__(self, model, texts: dict[str, torch.Tensor], seq_len: int, bos: int | None = None):
        self.model, self.texts, self.seq_len, self.cache = model, texts, seq_len, {}
        # BOS + seq_len - 1 tokens per window, the loss over the rest
        self.windows = {} if bos is None else {name: windows(ids, ids.numel(), seq_len, bos)
                                               for name, ids in texts.items()}

    def __call__(self, text: str, removed) -> float:
        key = (text, tuple(sorted(int(b) for b in removed)))
        if key not in self.cache:
            with bypassed(self.model, key[1]):
                if text in self.windows:
                    self.cache[key] = math.exp(mean_next_token_loss(self.model, self.windows[text], batch_size=8)[0])
                else:
                    self.cache[key] = perplexity(self.model, self.texts[text], seq_len=self.seq_len,
                                                 batch_size=8).perplexity
        return self.cache[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--out", default=None, help="default /tmp/h2h_<model>.json")
    ap.add_argument("--sleb-from", default=None, help="reuse the SLEB plans of an earlier JSON (same protocol)")
    ap.add_argument("--resume", default=None,
                    help="take the scores and plans of an earlier JSON of the same model and only evaluate")
    ap.add_argument("--reverify", default=None,
                    help="an earlier JSON of this model: re-run only verify (with today's portfolio) and measure "
                         "only the plans it did not")
    ap.add_argument("--refine", default="",
                    help="with --reverify: also verify2 with this many rounds of swap refinement, e.g. 1,3")
    ap.add_argument("--truth-from", default=None,
                    help="reuse the single-block truth of an earlier JSON (same model and windows)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--held", type=int, default=4, help="calibration windows held back for SLEB / verify")
    ap.add_argument("--ratios", default=None, help="blocks removed, e.g. 3,6,9 (default: the model's)")
    ap.add_argument("--wiki-windows", type=int, default=16)
    ap.add_argument("--c4-windows", type=int, default=16)
    ap.add_argument("--single-windows", type=int, default=8)
    ap.add_argument("--budget-s", type=float, default=1e9,
                    help="skip the steps (single-block truth, then C4) that would start after this many seconds")
    args = ap.parse_args()
    model_path, needs_bos, default_ratios = MODELS[args.model]
    args.ratios = args.ratios or default_ratios
    args.out = args.out or f"/tmp/h2h_{args.model}.json"
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    out: dict = {"machine": machine(args.threads), "platform": platform.platform(), "args": vars(args),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "skipped": []}
    try:
        from importlib.metadata import version
        out["gguf_version"] = version("gguf")
    except Exception:  # noqa: BLE001 - only a label in the report
        out["gguf_version"] = None
    path = Path(args.out)

    def save() -> None:
        out["seconds_total"] = time.perf_counter() - t_start
        path.write_text(json.dumps(out, indent=1))

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    print(out["machine"])
    t = time.perf_counter()
    model = load_model(model_path, dtype=torch.float32).eval()
    tok = load_tokenizer(model_path)
    T = model.config.num_hidden_layers
    out["load_s"] = time.perf_counter() - t
    calib = calibration_ids(WIKI_VALID, tok, n_samples=args.n_samples, seq_len=args.seq_len, seed=0)
    bos = tok.bos_token_id if needs_bos else None
    calib = prefix_bos(calib, bos)  # each window starts with BOS (and holds one token fewer)
    score_ids, loss_ids = calib[:args.n_samples - args.held], calib[args.n_samples - args.held:]
    wiki = tokenize_text(read_text(WIKI_TEST), tok)
    c4 = token_stream(C4, tok)
    n_c4 = min(args.c4_windows, int(c4.numel() // args.seq_len))
    L = args.seq_len
    texts = {"wikitext2": wiki[:args.wiki_windows * L], "c4": c4[:n_c4 * L], "single": wiki[:args.single_windows * L]}
    out["texts"] = {"wikitext2_test_windows": args.wiki_windows, "c4_windows": n_c4,
                    "c4_tokens_available": int(c4.numel()), "single_windows": args.single_windows,
                    "calibration": {"windows": args.n_samples, "scored": int(score_ids.shape[0]),
                                    "held_back_for_loss": int(loss_ids.shape[0]), "seq_len": L, "seed": 0}}
    ev = Evaluator(model, texts, L, bos)
    ratios = [int(r) for r in args.ratios.split(",")]
    max_n = max(ratios)

    if args.reverify:
        earlier = json.loads(Path(args.reverify).read_text())
        _reverify(out, earlier, model, score_ids, loss_ids, ratios, log,
                  [int(r) for r in args.refine.split(",") if r])
        for text in ("wikitext2", "c4"):  # same windows: the earlier run's measurements stand
            for key, value in earlier["ppl"].get(text, {}).items():
                if key == "dense":
                    ev.cache[(text, ())] = value
                    continue
                sel, n = key.rsplit("@", 1)
                if not sel.startswith("verify"):
                    ev.cache[(text, tuple(earlier["plans"][sel][n]["removed"]))] = value
        plans = {s: {int(n): e for n, e in v.items()} for s, v in out["plans"].items()}
        args.truth_from = args.reverify
        save()
    elif args.resume:  # scores and plans from an earlier run (its scoring and SLEB took the time)
        earlier = json.loads(Path(args.resume).read_text())
        for key in ("scoring_s", "single_scores", "plans"):
            out[key] = earlier[key]
        plans = {s: {int(n): e for n, e in v.items()} for s, v in earlier["plans"].items()}
        out["resumed_from"] = args.resume
    else:
        # --- scoring, once per estimator
        tables, out["scoring_s"] = {}, {}
        for name, kw in (("hist", {"estimator": "hist", "reduction": "pooled", "max_run": max_n,
                                   "companions": {"cosine": 1, "angular": max_n}}),
                         ("cosine", {"estimator": "cosine", "max_run": 1}),
                         ("angular", {"estimator": "angular", "max_run": max_n}),
                         ("gaussian", {"estimator": "gaussian", "max_run": max_n}),
                         ("ksg", {"estimator": "ksg", "reduction": "pooled", "max_run": 1}),
                         ("hist_per_dim", {"estimator": "hist", "reduction": "per_dim", "max_run": 1}),
                         ("gaussian_per_dim", {"estimator": "gaussian", "reduction": "per_dim", "max_run": 1})):
            t = time.perf_counter()
            tables[name] = miprun.score_blocks(model, score_ids, progress=False, seed=0, **kw)
            out["scoring_s"][name] = time.perf_counter() - t
            log(f"scored {name} in {out['scoring_s'][name]:.1f} s")
        out["single_scores"] = {k: [float(v) for v in tb.normalised()[:, 0]] for k, tb in tables.items()}
        save()

        # --- plans
        plans: dict[str, dict[int, dict]] = {s: {} for s in SELECTORS}
        rng = np.random.default_rng(0)
        for n in ratios:
            for s in SCORE_ONLY:
                t = time.perf_counter()
                if s == "random":
                    removed = sorted(int(b) for b in rng.choice(T, n, replace=False))
                    evaluations = 0
                else:
                    table = tables[{"shortgpt": "cosine", "gromov": "angular", "fbs_gaussian": "gaussian"}.get(s, "hist")]
                    plan = miprun.select(table, n, selector="fast_block_select" if s == "fbs_gaussian" else s)
                    removed, evaluations = list(plan.removed), plan.evaluations
                plans[s][n] = {"removed": removed, "forward_passes": 0, "run_scores_read": evaluations,
                               "select_s": time.perf_counter() - t}
            for k in (2, 4):
                oracle = CalibrationLoss(model, loss_ids, batch_size=8)
                t = time.perf_counter()
                plan = miprun.select(tables["hist"], n, selector="fast_block_select", verify=k, loss=oracle)
                entry = next(e for e in plan.trace if e.get("kind") == "verify")
                plans[f"verify{k}"][n] = {"removed": list(plan.removed), "forward_passes": entry["forward_passes"],
                                          "select_s": time.perf_counter() - t, "chosen_sources": entry["chosen_sources"],
                                          "candidates": [{"removed": c["removed"], "sources": c["sources"],
                                                          "loss": c["loss"]} for c in entry["candidates"]]}
            log(f"score-only and verify plans for n={n}")
        out["plans"] = plans
        save()
        sleb_loss = CalibrationLoss(model, loss_ids, batch_size=8)
        reused = json.loads(Path(args.sleb_from).read_text())["plans"]["sleb"] if args.sleb_from else {}
        for n in ratios if reused else ():
            plans["sleb"][n] = dict(reused[str(n)], reused_from=args.sleb_from)
        for n in ratios if not reused else ():  # one oracle for all ratios: SLEB's plan for n extends a smaller n's
            t = time.perf_counter()
            plan = miprun.select(None, n, selector="sleb", num_blocks=T, loss=sleb_loss)
            plans["sleb"][n] = {"removed": list(plan.removed), "forward_passes": plan.evaluations,
                                "select_s": time.perf_counter() - t, "order": [e["removed_block"] for e in plan.trace
                                                                              if e.get("kind") == "step"]}
            # the oracle's cache carries the earlier ratios' passes: the time of this n alone is the sum
            plans["sleb"][n]["select_s_cumulative"] = sleb_loss.seconds
            log(f"sleb n={n}: {plan.removed}, {plan.evaluations} passes, oracle {sleb_loss.seconds:.0f} s so far")
            save()
        # a standalone SLEB run for n pays every pass of its own search: seconds scale with passes
        for n in ratios if not reused else ():
            plans["sleb"][n]["select_s"] = sleb_loss.seconds * plans["sleb"][n]["forward_passes"] / sleb_loss.passes

    # --- held-out perplexity on WikiText-2 test
    out["ppl"] = {"wikitext2": {"dense": ev("wikitext2", ())}, "c4": {}}
    log(f"dense wikitext2 {out['ppl']['wikitext2']['dense']:.2f}")
    for n in ratios:
        for s in plans:
            out["ppl"]["wikitext2"][f"{s}@{n}"] = ev("wikitext2", plans[s][n]["removed"])
        log(f"wikitext2 n={n} done")
        save()

    # --- single-block truth
    if args.truth_from:
        out["single_truth"] = dict(json.loads(Path(args.truth_from).read_text())["single_truth"],
                                   reused_from=args.truth_from)
    if args.truth_from or time.perf_counter() - t_start < args.budget_s:
        truth = out["single_truth"]["ppl"] if args.truth_from else [ev("single", (b,)) for b in range(T)]
        if not args.truth_from:
            out["single_truth"] = {"ppl": truth, "dense": ev("single", ())}
        from scipy.stats import spearmanr
        out["spearman"] = {k: float(spearmanr(v, truth).statistic) for k, v in out["single_scores"].items()}
        log("single-block truth done")
        save()
    else:
        out["skipped"].append("single-block truth")

    # --- C4
    if n_c4 and time.perf_counter() - t_start < args.budget_s:
        out["ppl"]["c4"]["dense"] = ev("c4", ())
        for n in ratios:
            if time.perf_counter() - t_start >= args.budget_s:
                out["skipped"].append(f"c4 from n={n}")
                break
            for s in plans:
                out["ppl"]["c4"][f"{s}@{n}"] = ev("c4", plans[s][n]["removed"])
            log(f"c4 n={n} done")
            save()
    else:
        out["skipped"].append("c4")
    save()
    report(out, ratios)


def _reverify(out: dict, earlier: dict, model, score_ids, loss_ids, ratios: list[int], log,
              refine_rounds: list[int]) -> None:
    """``--reverify``: the earlier run's plans, with verify2 / verify4 rebuilt on a table with today's companions."""
    for key in ("scoring_s", "single_scores", "plans", "texts"):
        out[key] = earlier[key]
    for key in ("wiki_windows", "c4_windows", "n_samples", "seq_len", "held"):
        if earlier["args"][key] != out["args"][key]:
            raise SystemExit(f"--reverify needs the earlier run's --{key.replace('_', '-')} "
                             f"{earlier['args'][key]}, got {out['args'][key]}")
    out["reverified_from"] = earlier["args"].get("out")
    t = time.perf_counter()
    table = miprun.score_blocks(model, score_ids, progress=False, seed=0, estimator="hist", reduction="pooled",
                                max_run=max(ratios), companions=companion_runs(max(ratios)))
    out["scoring_s"] = dict(out["scoring_s"], hist_with_companions=time.perf_counter() - t)
    log(f"scored hist with {sorted(table.companions)} in {out['scoring_s']['hist_with_companions']:.1f} s")
    oracle = CalibrationLoss(model, loss_ids, batch_size=8)
    variants = [(f"verify{k}", k, 0) for k in (2, 4)] + [(f"verify2_refine{r}", 2, r) for r in refine_rounds]
    for n in ratios:
        for name, k, rounds in variants:
            t = time.perf_counter()
            plan = miprun.select(table, n, selector="fast_block_select", verify=k, loss=oracle, refine=rounds)
            entry = next(e for e in plan.trace if e.get("kind") == "verify")
            out["plans"].setdefault(name, {})[str(n)] = {
                "removed": list(plan.removed), "forward_passes": entry["forward_passes"],
                "select_s": time.perf_counter() - t, "chosen_sources": entry["chosen_sources"],
                "oracle_shared_with_k2": name != "verify2", "refine": entry.get("refine"),
                "candidates": [{"removed": c["removed"], "sources": c["sources"], "loss": c["loss"]}
                               for c in entry["candidates"]]}
            log(f"{name} n={n}: {plan.removed} from {entry['chosen_sources']}, {entry['forward_passes']} passes")


def report(out: dict, ratios: list[int]) -> None:
    """Print the tables of a results dict (also usable on a saved JSON)."""
    plans = out["plans"]
    for text in ("wikitext2", "c4"):
        ppl = out["ppl"].get(text, {})
        if not ppl:
            continue
        print(f"\nPerplexity on {text} (dense {ppl.get('dense', float('nan')):.2f})\n")
        rows = [[s] + [ppl.get(f"{s}@{n}", float("nan")) for n in ratios] for s in out["plans"]]
        print(markdown(["selector"] + [f"{n} removed" for n in ratios], rows))
    print("\nForward passes (loss measurements) and selection seconds\n")
    print(markdown(["selector"] + [f"passes {n}" for n in ratios] + [f"s {n}" for n in ratios],
                   [[s] + [plans[s][str(n)]["forward_passes"] if str(n) in plans[s] else plans[s][n]["forward_passes"]
                           for n in ratios]
                    + [float(plans[s][str(n)]["select_s"] if str(n) in plans[s] else plans[s][n]["select_s"])
                       for n in ratios] for s in out["plans"]]))
    print("\nPlans\n")
    print(markdown(["selector"] + [f"{n}" for n in ratios],
                   [[s] + [(plans[s].get(str(n)) or plans[s].get(n))["removed"] for n in ratios] for s in out["plans"]]))
    if "spearman" in out:
        print("\nSpearman rho of each single-block score (oriented: higher = more removable) with the perplexity "
              "after removing that block alone (good: near -1)\n")
        print(markdown(["estimator", "rho"], [[k, v] for k, v in out["spearman"].items()]))
    print(f"\nskipped: {out['skipped'] or 'nothing'}; total {out.get('seconds_total', math.nan):.0f} s")


if __name__ == "__main__":
    main()
