"""Study 3: Fast-Block-Select against ``optimal`` and the exhaustive perplexity oracle.

For each setting: how many run scores Fast-Block-Select (FBS) read against the brute-force
count (every run up to length N: 150 for 32 blocks / 5 removed, as in the paper), the gap of
its objective to ``optimal`` (the exact minimum of the additive damage, sum over removed runs
of ``1 - normalised MI``), and the perplexity of the pruned model next to ``optimal``,
``greedy`` (best single blocks), ShortGPT, Gromov, a random plan and - where the subsets are
few - the oracle (the subset with the best measured perplexity).

Settings:
- stories260K (5 blocks), N = 1..4: calibration 32 x 128 tokens from the first 20 TinyStories
  stories, perplexity on the other 25 (window 256); the oracle tries all C(5, N) subsets.
- synthetic Llama with 10 blocks (N = 3, 4; oracle over 120 / 210 subsets) and 32 blocks
  (N = 5, as in the paper; no oracle: 201,376 subsets), hidden 64, three model seeds
  (``study_common.synthetic_llama``: random weights, block importance decaying with depth,
  with noise). Calibration: 32 x 128 tokens of WikiText-2 (stories260K's tokenizer);
  perplexity on 8 x 128 tokens sampled from the full model (a random model has no other
  meaningful text).
Scores: hist, pooled, quantile bins (the default).

Run: ``PYTHONPATH=python python benchmarks/study_fbs_vs_optimal.py`` (a few minutes on one
CPU thread).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import time

import numpy as np
import torch
from study_common import (CALIBRATION_SETS, calibration_ids, load_stories, machine, markdown, plot_path,
                          sample_text, stories, story_tokens, synthetic_llama)

from miprun.calibration.windows import draw_windows
from miprun.evaluate.summary import perplexity
from miprun.scoring.score import score_blocks
from miprun.selection.select import select
from miprun.output.surgery import remove_blocks


class PerplexityCache:
    """Perplexity of the model with a set of blocks removed, each set measured once."""

    def __init__(self, model, ids, seq_len):
        self.model, self.ids, self.seq_len, self.cache = model, ids, seq_len, {}

    def __call__(self, removed) -> float:
        key = tuple(sorted(removed))
        if key not in self.cache:
            m = remove_blocks(copy.deepcopy(self.model), list(key)) if key else self.model
            self.cache[key] = perplexity(m, self.ids, seq_len=self.seq_len, batch_size=8).perplexity
        return self.cache[key]


def plans(model, calib, n, seed):
    """Plans of every selector, with the run-score counts of FBS."""
    table = score_blocks(model, calib, estimator="hist", reduction="pooled", max_run=n, seed=seed, progress=False)
    out = {s: select(table, n, selector=s) for s in ("fast_block_select", "optimal", "greedy")}
    cos = score_blocks(model, calib, estimator="cosine", max_run=1, progress=False)
    ang = score_blocks(model, calib, estimator="angular", max_run=n, progress=False)
    out["shortgpt"] = select(cos, n, selector="shortgpt")
    out["gromov"] = select(ang, n, selector="gromov")
    rng = np.random.default_rng(seed)
    out["random"] = sorted(int(b) for b in rng.choice(table.num_blocks, n, replace=False))
    summary = next(t for t in out["fast_block_select"].trace if t.get("kind") == "summary")
    brute = int(np.count_nonzero(~np.isnan(table.values)))
    return table, out, summary, brute


def run_setting(name, model, calib, n, ppl, seed, oracle_limit):
    T = len(model.model.layers)
    table, out, summary, brute = plans(model, calib, n, seed)
    opt = out["optimal"].objective
    row = {"setting": name, "T": T, "N": n, "brute": brute, "fbs_single": summary["single_evaluations"],
           "fbs_runs": summary["run_evaluations"], "fbs_iter": summary["iterations"],
           "gap": out["fast_block_select"].objective - opt,
           "same_as_optimal": out["fast_block_select"].removed == out["optimal"].removed}
    row["ppl"] = {k: ppl(v if isinstance(v, list) else v.removed) for k, v in out.items()}
    row["plans"] = {k: (v if isinstance(v, list) else v.removed) for k, v in out.items()}
    row["ppl0"] = ppl([])
    n_sub = math.comb(T, n)
    if n_sub <= oracle_limit:
        best = min(itertools.combinations(range(T), n), key=ppl)
        row["plans"]["oracle"], row["ppl"]["oracle"] = list(best), ppl(best)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-seeds", type=int, default=3, help="synthetic models per size")
    ap.add_argument("--oracle-limit", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine(args.threads))
    t0 = time.perf_counter()
    rows = []
    model, tok = load_stories()
    texts = stories()
    calib = draw_windows(story_tokens(texts[:20], tok), n_samples=32, seq_len=128, seed=0)
    ppl = PerplexityCache(model, story_tokens(texts[20:], tok), 256)
    for n in range(1, 5):
        rows.append(run_setting("stories260K", model, calib, n, ppl, 0, args.oracle_limit))

    for T, ns in ((10, (3, 4)), (32, (5,))):
        for seed in range(args.model_seeds):
            model, _ = synthetic_llama(num_blocks=T, hidden=64, seed=seed)
            calib = calibration_ids(CALIBRATION_SETS["wikitext2"], tok, n_samples=32, seq_len=128, seed=seed)
            ppl = PerplexityCache(model, sample_text(model, n_sequences=8, length=128, seed=100 + seed), 128)
            for n in ns:
                rows.append(run_setting(f"synthetic seed {seed}", model, calib, n, ppl, seed, args.oracle_limit))

    print(f"\n({time.perf_counter() - t0:.0f} s)\n\nRun scores read: Fast-Block-Select vs brute force; objective gap "
          "to optimal (additive damage, normalised hist MI)\n")
    print(markdown(["model", "T", "N", "brute force", "FBS single", "FBS runs", "FBS total", "iterations",
                    "FBS = optimal", "objective gap"],
                   [[r["setting"], r["T"], r["N"], r["brute"], r["fbs_single"], r["fbs_runs"],
                     r["fbs_single"] + r["fbs_runs"], r["fbs_iter"], "yes" if r["same_as_optimal"] else "no",
                     r["gap"]] for r in rows]))
    sel = ["fast_block_select", "optimal", "greedy", "shortgpt", "gromov", "random", "oracle"]
    print("\nPerplexity after removal (unpruned in the first column); oracle = best of all subsets\n")
    print(markdown(["model", "T", "N", "unpruned"] + sel,
                   [[r["setting"], r["T"], r["N"], r["ppl0"]] + [r["ppl"].get(s, float("nan")) for s in sel]
                    for r in rows]))
    print("\nPlans\n")
    print(markdown(["model", "T", "N"] + sel,
                   [[r["setting"], r["T"], r["N"]] + [r["plans"].get(s, "") for s in sel] for r in rows]))
    _summary(rows, sel)
    _plot(rows, sel)


def _summary(rows, sel) -> None:
    print("\nPerplexity ratio to the oracle and to optimal: median over rows (the oracle: rows that have one)\n")
    out = []
    for group, members in (("stories260K", [r for r in rows if r["setting"] == "stories260K"]),
                           ("synthetic", [r for r in rows if r["setting"] != "stories260K"])):
        for s in sel:
            have = [r for r in members if s in r["ppl"]]
            if not have:
                continue
            with_oracle = [r for r in have if "oracle" in r["ppl"]]
            to_oracle = np.median([r["ppl"][s] / r["ppl"]["oracle"] for r in with_oracle]) if with_oracle else np.nan
            to_opt = np.median([r["ppl"][s] / r["ppl"]["optimal"] for r in have])
            wins = sum(r["ppl"][s] <= r["ppl"]["fast_block_select"] for r in have)
            out.append([group, s, float(to_oracle), float(to_opt), f"{wins}/{len(have)}"])
    print(markdown(["model", "selector", "ppl / oracle", "ppl / optimal", "rows at least as good as FBS"], out))


def _plot(rows, sel) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=80)
    x = np.arange(len(rows))
    width = 0.8 / len(sel)
    for i, s in enumerate(sel):
        vals = [r["ppl"].get(s, np.nan) / r["ppl0"] for r in rows]
        ax.bar(x + (i - len(sel) / 2 + 0.5) * width, vals, width, label=s)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{r['setting'].replace('synthetic ', 'syn ')}\nT={r['T']} N={r['N']}" for r in rows],
                  fontsize=6)
    ax.set_ylabel("perplexity / unpruned (log)")
    ax.legend(fontsize=6, ncol=4)
    ax.set_title("Fast-Block-Select vs optimal, baselines and the perplexity oracle", fontsize=9)
    fig.tight_layout()
    path = plot_path("study_fbs_vs_optimal.png")
    fig.savefig(path)
    print(f"\nplot: {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
