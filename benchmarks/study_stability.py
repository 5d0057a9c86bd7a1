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

Run: ``PYTHONPATH=python python benchmarks/study_stability.py`` (a few minutes on one CPU thread).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from study_common import (CALIBRATION_SETS, calibration_ids, distinct_windows, jaccard, load_stories, machine,
                          markdown, plot_path, synthetic_llama)

from miprun.scoring.score import score_blocks
from miprun.selection.select import select

SIZES = [(32, 128), (64, 128), (128, 128), (256, 128), (128, 64), (128, 256)]
REFERENCE = ("wikitext2", 128, 128)


def plans_for(model, ids, counts):
    mi = score_blocks(model, ids, estimator="hist", reduction="pooled", max_run=max(counts), progress=False)
    cos = score_blocks(model, ids, estimator="cosine", max_run=1, progress=False)
    return {n: (select(mi, n, selector="fast_block_select").removed, select(cos, n, selector="shortgpt").removed)
            for n in counts}


def study(name, model, tok, counts):
    t0 = time.perf_counter()
    plans = {}
    for ds, path in CALIBRATION_SETS.items():
        for n_samples, seq_len in SIZES:
            ids = calibration_ids(path, tok, n_samples=n_samples, seq_len=seq_len, seed=0)
            plans[(ds, n_samples, seq_len)] = plans_for(model, ids, counts)
    print(f"\n## {name} ({time.perf_counter() - t0:.0f} s)\n")
    heads = ["calibration", "samples x seq_len"] + [f"MI-PRUN N={n}" for n in counts] + \
            [f"ShortGPT N={n}" for n in counts]
    print(markdown(heads, [[ds, f"{ns} x {sl}"] + [p[n][0] for n in counts] + [p[n][1] for n in counts]
                           for (ds, ns, sl), p in plans.items()]))
    rows, summary = [], {}
    for n in counts:
        for which, label in ((0, "MI-PRUN"), (1, "ShortGPT")):
            ref = plans[REFERENCE][n][which]
            to_ref = [jaccard(p[n][which], ref) for k, p in plans.items() if k != REFERENCE]
            across = []
            for ns, sl in SIZES:  # the four sets against each other at the same size
                group = [plans[(ds, ns, sl)][n][which] for ds in CALIBRATION_SETS]
                across += [jaccard(a, b) for a, b in itertools.combinations(group, 2)]
            distinct = len({tuple(p[n][which]) for p in plans.values()})
            rows.append([f"N={n}", label, float(np.mean(to_ref)), float(np.min(to_ref)), float(np.mean(across)),
                         f"{distinct} / {len(plans)}"])
            summary[(n, label)] = (np.mean(to_ref), np.mean(across))
    print(f"\nJaccard agreement ({len(plans)} calibrations; reference {REFERENCE[0]} {REFERENCE[1]} x {REFERENCE[2]})\n")
    print(markdown(["removed", "selector", "mean J to reference", "min J to reference",
                    "mean J across sets (same size)", "distinct plans"], rows))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine(args.threads))
    model, tok = load_stories()
    print("distinct windows of 128 tokens per set (streams capped at 300k tokens): " + ", ".join(
        f"{ds} {distinct_windows(p, tok, 128)}" for ds, p in CALIBRATION_SETS.items()))
    results = {"stories260K": study("stories260K (5 blocks)", model, tok, (1, 2))}
    synth, _ = synthetic_llama(num_blocks=32, hidden=64, seed=0)
    results["synthetic 32"] = study("synthetic Llama, 32 blocks", synth, tok, (4, 8))
    _plot(results)


def _plot(results) -> None:
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
    ax.set_title("Plan stability across WikiText-2 / C4 / Alpaca / TinyStories", fontsize=9)
    fig.tight_layout()
    path = plot_path("study_stability.png")
    fig.savefig(path)
    print(f"\nplot: {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
