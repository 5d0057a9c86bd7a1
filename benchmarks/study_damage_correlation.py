"""Study 1: which scores predict the damage of removing blocks? (stories260K, real perplexity)

For every single block and every pair of blocks of stories260K (5 blocks: 5 + 10 removals),
measure the perplexity after removal on held-out TinyStories text, and the Spearman rank
correlation between each estimator x reduction's scores and that damage (log perplexity
ratio to the unpruned model). Signs are oriented so that positive means the score predicts
the damage (high MI / low distance -> little damage).

Pairs are predicted two ways:
- ``sum``: the spec's reading - an adjacent pair by its run score ``MI(h_s, h_{s+2})``, a
  non-adjacent pair by the sum of its two single-block scores (MI in nats; distances for
  cosine/angular);
- ``additive``: the damage the ``optimal`` selector minimises - the sum over the pair's
  maximal runs of ``1 - normalised score`` (an adjacent pair is one run, a non-adjacent pair
  two runs), which puts runs and single blocks on one scale.
``all`` ranks the 15 removals together under ``additive``.

Calibration: the first 20 stories of the TinyStories file, ``--n-samples`` windows of
``--seq-len`` tokens, redrawn for each of ``--seeds`` seeds (the spread across seeds is
shown). Held out: the other 25 stories (each with its BOS, as the model was trained),
perplexity in non-overlapping windows of ``--eval-seq-len``.

Run: ``PYTHONPATH=python python benchmarks/study_damage_correlation.py`` (about a minute on
one CPU thread).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from study_common import load_stories, machine, markdown, plot_path, stories, story_tokens

from miprun.calibration.windows import draw_windows
from miprun.evaluate.summary import perplexity
from miprun.scoring.score import score_blocks
from miprun.output.surgery import remove_blocks
from miprun.scoring.table import MI_ESTIMATORS

#: (label, estimator, reduction, extra score_blocks options)
VARIANTS = [
    ("hist pooled quantile", "hist", "pooled", {"binning": "quantile"}),
    ("hist pooled uniform", "hist", "pooled", {"binning": "uniform"}),
    ("hist per_dim quantile", "hist", "per_dim", {"binning": "quantile"}),
    ("hist per_dim uniform", "hist", "per_dim", {"binning": "uniform"}),
    ("ksg pooled", "ksg", "pooled", {}),
    ("ksg per_dim", "ksg", "per_dim", {}),
    ("ksg projection", "ksg", "projection", {}),
    ("gaussian pooled", "gaussian", "pooled", {}),
    ("gaussian per_dim", "gaussian", "per_dim", {}),
    ("cosine (ShortGPT BI)", "cosine", "pooled", {}),
    ("angular (Gromov)", "angular", "pooled", {}),
]
N_CALIB_STORIES = 20


def oriented(table) -> np.ndarray:
    """Raw scores with higher = more removable (MI as is, distances negated)."""
    return table.values if table.estimator in MI_ESTIMATORS else -table.values


def predictions(table, removals):
    """Predicted removability under the three readings, for each removal (tuple of blocks)."""
    raw, norm = oriented(table), table.normalised()
    summed, additive = [], []
    for rem in removals:
        if len(rem) == 1:
            summed.append(raw[rem[0], 0])
            additive.append(-(1 - norm[rem[0], 0]))
        elif rem[1] == rem[0] + 1:
            summed.append(raw[rem[0], 1])
            additive.append(-(1 - norm[rem[0], 1]))
        else:
            summed.append(raw[rem[0], 0] + raw[rem[1], 0])
            additive.append(-(2 - norm[rem[0], 0] - norm[rem[1], 0]))
    return np.array(summed), np.array(additive)


def rho(predicted_removability, damage) -> float:
    # positive = the score predicts the damage: more removable <-> less damage
    r = spearmanr(-np.asarray(predicted_removability), np.asarray(damage)).statistic
    return float(r) if np.isfinite(r) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine(args.threads))
    model, tok = load_stories()
    texts = stories()
    calib_stream = story_tokens(texts[:N_CALIB_STORIES], tok)
    held_out = story_tokens(texts[N_CALIB_STORIES:], tok)
    T = len(model.model.layers)
    print(f"stories260K: {T} blocks; calibration {len(texts[:N_CALIB_STORIES])} stories ({calib_stream.numel()} "
          f"tokens, {calib_stream.numel() // args.seq_len} distinct windows of {args.seq_len}), {args.n_samples} "
          f"windows per seed x {args.seeds} seeds; held out {len(texts) - N_CALIB_STORIES} stories "
          f"({held_out.numel()} tokens), perplexity seq_len {args.eval_seq_len}")

    t0 = time.perf_counter()
    base = perplexity(model, held_out, seq_len=args.eval_seq_len, batch_size=8)
    singles = [(b,) for b in range(T)]
    pairs = list(itertools.combinations(range(T), 2))
    removals = singles + pairs
    ppl = {rem: perplexity(remove_blocks(copy.deepcopy(model), list(rem)), held_out,
                           seq_len=args.eval_seq_len, batch_size=8).perplexity for rem in removals}
    damage = {rem: math.log(ppl[rem] / base.perplexity) for rem in removals}
    print(f"\nmeasured damage ({time.perf_counter() - t0:.1f} s; unpruned perplexity {base.perplexity:.4f} on "
          f"{base.tokens_scored} tokens)\n")
    print(markdown(["removed", "adjacent", "perplexity", "damage log(ppl/ppl0)"],
                   [[list(r), "yes" if len(r) == 1 or r[1] == r[0] + 1 else "no", ppl[r], damage[r]]
                    for r in removals]))

    results = {label: {"single": [], "pair sum": [], "pair additive": [], "all additive": []}
               for label, *_ in VARIANTS}
    seconds = {label: 0.0 for label, *_ in VARIANTS}
    dmg_single = [damage[r] for r in singles]
    dmg_pair = [damage[r] for r in pairs]
    dmg_all = [damage[r] for r in removals]
    for seed in range(args.seeds):
        ids = draw_windows(calib_stream, n_samples=args.n_samples, seq_len=args.seq_len, seed=seed)
        for label, est, red, extra in VARIANTS:
            t1 = time.perf_counter()
            table = score_blocks(model, ids, estimator=est, reduction=red, max_run=2, seed=seed, progress=False,
                                 **extra)
            seconds[label] += time.perf_counter() - t1
            summed, additive = predictions(table, removals)
            r = results[label]
            r["single"].append(rho(summed[:T], dmg_single))
            r["pair sum"].append(rho(summed[T:], dmg_pair))
            r["pair additive"].append(rho(additive[T:], dmg_pair))
            r["all additive"].append(rho(additive, dmg_all))

    print(f"\nSpearman rank correlation with the measured damage (positive = predicts it), mean +- sd over "
          f"{args.seeds} calibration draws; single: n={T}, pairs: n={len(pairs)}, all: n={len(removals)}\n")
    rows = []
    for label, *_ in VARIANTS:
        r = results[label]
        rows.append([label] + [f"{np.mean(r[k]):+.2f} +- {np.std(r[k]):.2f}" for k in r]
                    + [f"{seconds[label] / args.seeds:.2f}"])
    print(markdown(["score", "single", "pair (sum)", "pair (additive)", "all 15 (additive)", "score s"], rows))
    _plot(results)


def _plot(results) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = list(results)
    keys = ["single", "pair additive", "all additive"]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=80)
    x = np.arange(len(labels))
    for i, k in enumerate(keys):
        means = [np.mean(results[lb][k]) for lb in labels]
        sds = [np.std(results[lb][k]) for lb in labels]
        ax.bar(x + (i - 1) * 0.27, means, 0.27, yerr=sds, label=k, capsize=2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("Spearman rho with damage")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("stories260K: do scores predict removal damage? (positive = yes)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = plot_path("study_damage_correlation.png")
    fig.savefig(path)
    print(f"\nplot: {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
