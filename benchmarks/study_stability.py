"""Study 2: how stable is the plan across calibration sets, sizes and sequence lengths? (paper tables 7-8)

Plans of MI-PRUN (Fast-Block-Select on hist / pooled / quantile scores, the default) and of
ShortGPT (greedy Block Influence) for:
- stories260K (5 blocks), removing 1 and 2 blocks;
- a synthetic 32-block Llama (hidden 64; ``study_common.synthetic_llama``, seed 0), removing
  4 and 8 blocks;
calibrated on WikiText-2 (valid split), C4 (300 documents), Alpaca (5000 records) and
TinyStories (45 stories), all tokenised with stories260K's tokenizer, at 32, 64, 128 and
256 windows of 128 tokens, and at 128 windows of 64 and 256 tokens (24 calibrations). Agreement
is the Jaccard index of the removed sets: against the reference calibration (WikiText-2,
128 x 128), and between the four calibration sets at the same size.

TinyStories holds about 15k tokens: above ~117 windows of 128 tokens its windows overlap
(drawn at random offsets), so its larger calibrations add little new text.

The real models (``--models smollm2,gemma3``; see ``study_head_to_head.MODELS``) are
calibrated with their own tokenizers on WikiText-2, C4 and Alpaca, at 8, 16 and 32 windows
of 512 tokens and at 32 windows of 128 and 256 tokens (15 calibrations; reference
WikiText-2 32 x 512), removing about 10/20/30 % of their blocks; one scoring pass gives
both plans (the cosine table is scored beside the MI table). Gemma gets a BOS per window.

Run: ``PYTHONPATH=python:benchmarks python benchmarks/study_stability.py [--models stories,synthetic]``
(a few minutes on one CPU thread; each real model 10-30 minutes).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from study_common import (CALIBRATION_SETS, calibration_ids, distinct_windows, jaccard, load_stories, machine,
                          markdown, plot_path, prefix_bos, synthetic_llama)

from study_head_to_head import MODELS

from miprun.scoring.score import score_blocks
from miprun.selection.select import select

SIZES = [(32, 128), (64, 128), (128, 128), (256, 128), (128, 64), (128, 256)]
REFERENCE = ("wikitext2", 128, 128)
REAL_SIZES = [(8, 512), (16, 512), (32, 512), (32, 128), (32, 256)]
REAL_REFERENCE = ("wikitext2", 32, 512)
REAL_SETS = ("wikitext2", "c4", "alpaca")


def plans_for(model, ids, counts):
    mi = score_blocks(model, ids, estimator="hist", reduction="pooled", max_run=max(counts), progress=False,
                      companions={"cosine": 1})
    cos = mi.companions["cosine"]
    return {n: (select(mi, n, selector="fast_block_select").removed, select(cos, n, selector="shortgpt").removed)
            for n in counts}


def study(name, model, tok, counts, *, sets=tuple(CALIBRATION_SETS), sizes=SIZES, reference=REFERENCE, bos=None):
    t0 = time.perf_counter()
    plans = {}
    for ds in sets:
        for n_samples, seq_len in sizes:
            ids = calibration_ids(CALIBRATION_SETS[ds], tok, n_samples=n_samples, seq_len=seq_len, seed=0)
            ids = prefix_bos(ids, bos)  # each window starts with BOS (Gemma)
            plans[(ds, n_samples, seq_len)] = plans_for(model, ids, counts)
            print(f"  {name}: {ds} {n_samples} x {seq_len} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\n## {name} ({time.perf_counter() - t0:.0f} s)\n")
    heads = ["calibration", "samples x seq_len"] + [f"MI-PRUN N={n}" for n in counts] + \
            [f"ShortGPT N={n}" for n in counts]
    print(markdown(heads, [[ds, f"{ns} x {sl}"] + [p[n][0] for n in counts] + [p[n][1] for n in counts]
                           for (ds, ns, sl), p in plans.items()]))
    rows, summary = [], {}
    for n in counts:
        for which, label in ((0, "MI-PRUN"), (1, "ShortGPT")):
            ref = plans[reference][n][which]
            to_ref = [jaccard(p[n][which], ref) for k, p in plans.items() if k != reference]
            across = []
            for ns, sl in sizes:  # the sets against each other at the same size
                group = [plans[(ds, ns, sl)][n][which] for ds in sets]
                across += [jaccard(a, b) for a, b in itertools.combinations(group, 2)]
            distinct = len({tuple(p[n][which]) for p in plans.values()})
            rows.append([f"N={n}", label, float(np.mean(to_ref)), float(np.min(to_ref)), float(np.mean(across)),
                         f"{distinct} / {len(plans)}"])
            summary[(n, label)] = (np.mean(to_ref), np.mean(across))
    print(f"\nJaccard agreement ({len(plans)} calibrations; reference {reference[0]} {reference[1]} x {reference[2]})\n")
    print(markdown(["removed", "selector", "mean J to reference", "min J to reference",
                    "mean J across sets (same size)", "distinct plans"], rows))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="stories,synthetic", help="any of stories, synthetic, smollm2, gemma3")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine(args.threads))
    names = args.models.split(",")
    results = {}
    if "stories" in names or "synthetic" in names:
        model, tok = load_stories()
        print("distinct windows of 128 tokens per set (streams capped at 300k tokens): " + ", ".join(
            f"{ds} {distinct_windows(p, tok, 128)}" for ds, p in CALIBRATION_SETS.items()))
        if "stories" in names:
            results["stories260K"] = study("stories260K (5 blocks)", model, tok, (1, 2))
        if "synthetic" in names:
            synth, _ = synthetic_llama(num_blocks=32, hidden=64, seed=0)
            results["synthetic 32"] = study("synthetic Llama, 32 blocks", synth, tok, (4, 8))
    for name in (n for n in names if n in MODELS and n != "stories"):
        from miprun.models.loading import load_model, load_tokenizer
        path, needs_bos, counts = MODELS[name]
        model, tok = load_model(path, dtype=torch.float32).eval(), load_tokenizer(path)
        results[name] = study(f"{name} ({model.config.num_hidden_layers} blocks)", model, tok,
                              tuple(int(c) for c in counts.split(",")), sets=REAL_SETS, sizes=REAL_SIZES,
                              reference=REAL_REFERENCE, bos=tok.bos_token_id if needs_bos else None)
    _plot(results, "study_stability.png" if names == ["stories", "synthetic"] else
          f"study_stability_{'_'.join(names)}.png")


def _plot(results, name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels, mi, sg = [], [], []
    for model, summary in results.items():
        for (n, sel), (to_ref, across) in summary.items():
            if sel == "MI-PRUN":
                labels.append(f"{model}\nN={n}")
                mi.append(across)
                sg.append(summary[(n, "ShortGPT")][1])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
    ax.bar(x - 0.2, mi, 0.4, label="MI-PRUN (FBS, hist pooled)")
    ax.bar(x + 0.2, sg, 0.4, label="ShortGPT")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean Jaccard across calibration sets")
    ax.legend(fontsize=7)
    ax.set_title("Plan stability across calibration sets", fontsize=9)
    fig.tight_layout()
    path = plot_path(name)
    fig.savefig(path)
    print(f"\nplot: {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
