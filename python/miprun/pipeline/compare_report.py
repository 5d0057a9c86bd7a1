"""A comparison written out: a Markdown table, a JSON file and a bar chart, in one guarded folder.

Over several block counts, also one figure per evaluation text of perplexity against the
share of blocks removed, and one per zero-shot task of accuracy against it (one line per
selector, the dense model as a horizontal line), drawn by
:func:`miprun.output.plots.plot_against_removed`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from miprun.output.guard import MARKER, absolute_path, atomic_output_dir
from miprun.output.plots import plot_against_removed
from miprun.pipeline.compare import CompareResult
from miprun.util.jsonio import write_json

__all__ = ["to_markdown", "plot", "plot_counts", "count_figures", "write_outputs"]


def to_markdown(result: CompareResult) -> str:
    """The comparison as a Markdown table (one row per selector, the unpruned model first)."""
    texts = list(result.baseline.perplexity)
    task_names = list(result.baseline.tasks)
    many = len(result.counts) > 1
    head = (["method"] + (["N"] if many else []) + ["removed"] + [f"ppl {Path(t).name}" for t in texts]
            + [f"acc {t}" for t in task_names] + ["score s", "select s", "evaluations", "damage"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in [result.baseline] + result.rows:
        cells = ([r.method] + ([str(r.num_remove if r.num_remove is not None else len(r.removed))] if many else [])
                 + [str(r.removed)] + [f"{r.perplexity[t]:.4f}" for t in texts])
        cells += [f"{r.tasks.get(t, float('nan')):.4f}" for t in task_names]
        cells += [f"{r.score_s:.2f}", f"{r.select_s:.4f}", str(r.evaluations),
                  "" if r.objective is None else f"{r.objective:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    s = result.settings
    lines.append("")
    removed = ", ".join(str(n) for n in result.counts) if many else str(s["num_remove"])
    lines.append(f"{s['num_blocks']} blocks, {removed} removed; calibration {s['calibration_shape']} tokens; "
                 f"perplexity seq_len {s['seq_len']}"
                 + ("" if s["stride"] is None else f", stride {s['stride']}")
                 + f"; oracle criterion: {Path(s['oracle_criterion']).name}. "
                 "damage = sum over removed runs of 1 - normalised score, under the row's own table.")
    return "\n".join(lines) + "\n"


def plot(result: CompareResult, path: str | Path) -> Path:
    """Bar chart of each row's perplexity on the first evaluation text (log scale), unpruned as a line;
    over several block counts, one panel per count, one above the other."""
    import matplotlib  # optional-weight plotting library, loaded only when a plot is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text = next(iter(result.baseline.perplexity))
    counts = result.counts
    groups = [[r for r in result.rows if r.num_remove in (None, n)] for n in counts] if len(counts) > 1 \
        else [result.rows]
    height = 0.28 * max(len(g) for g in groups) + 1.5
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, height * len(groups)), dpi=90, squeeze=False)
    for ax, rows, n in zip(axes[:, 0], groups, counts):
        labels = [r.method for r in rows]
        values = [r.perplexity[text] for r in rows]
        colours = ["tab:blue" if r.selector == "fast_block_select" else
                   "tab:green" if r.selector in ("optimal", "greedy") else
                   "tab:red" if r.selector == "exhaustive_perplexity" else "tab:gray" for r in rows]
        y = np.arange(len(labels))
        ax.barh(y, values, color=colours)
        ax.axvline(result.baseline.perplexity[text], color="black", linestyle="--", linewidth=1, label="unpruned")
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel(f"perplexity on {Path(text).name} (log scale)")
        removed = result.settings["num_remove"] if len(counts) == 1 else n
        ax.set_title(f"{removed} of {result.settings['num_blocks']} blocks removed", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "text"


def count_figures(result: CompareResult) -> dict[str, str]:
    """File names of the figures against the share of blocks removed: ``{"perplexity:<text>" or
    "accuracy:<task>": "<file>.png"}``; empty for a single block count."""
    if len(result.counts) < 2:
        return {}
    names: dict[str, str] = {}
    used: set[str] = set()
    keys = ([("perplexity", t, Path(t).name) for t in result.baseline.perplexity]
            + [("accuracy", t, t) for t in result.baseline.tasks])
    for kind, key, short in keys:
        stem = f"{kind}_vs_removed_{_slug(short)}"
        name, i = f"{stem}.png", 2
        while name in used:  # two texts of the same file name in different folders
            name, i = f"{stem}_{i}.png", i + 1
        used.add(name)
        names[f"{kind}:{key}"] = name
    return names


def plot_counts(result: CompareResult, folder: str | Path) -> dict[str, Path]:
    """Over several block counts: perplexity (one figure per evaluation text) and zero-shot accuracy
    (one per task) against the share of blocks removed, one line per selector, the dense model as a
    horizontal line, written into ``folder`` under the names of :func:`count_figures`."""
    total = result.settings["num_blocks"]
    out: dict[str, Path] = {}
    for key, name in count_figures(result).items():
        kind, _, what = key.partition(":")
        series: dict[str, list[tuple[float, float]]] = {}
        for r in result.rows:
            n = r.num_remove if r.num_remove is not None else len(r.removed)
            label = r.method.split("(")[0] if r.selector == "random" else r.method  # one line across counts
            value = r.perplexity.get(what) if kind == "perplexity" else r.tasks.get(what)
            series.setdefault(label, []).append((n / total, float("nan") if value is None else float(value)))
        if kind == "perplexity":
            base, ylabel = result.baseline.perplexity[what], f"perplexity on {Path(what).name}"
        else:
            base, ylabel = result.baseline.tasks.get(what, float("nan")), f"accuracy on {what}"
        counts = ", ".join(str(n) for n in result.counts)
        out[key] = plot_against_removed(series, Path(folder) / name, ylabel=ylabel, baseline=base,
                                        log_y=kind == "perplexity",
                                        title=f"{counts} of {total} blocks removed")
    return out


def write_outputs(result: CompareResult, out_dir: str | Path, *, extra: dict | None = None,
                  overwrite: bool = False, protect=()) -> dict[str, Path]:
    """Write ``compare.md``, ``compare.json`` and ``compare.png`` into the folder ``out_dir``, atomically.

    Over several block counts, also the figures of :func:`plot_counts` (keys
    ``"perplexity:<text>"`` and ``"accuracy:<task>"`` of the returned paths).
    The folder is checked like every miprun output (:mod:`miprun.output.guard`): it is new,
    or with ``overwrite`` an earlier miprun output or empty, and overlaps no input.
    """
    names = {"markdown": "compare.md", "json": "compare.json", "plot": "compare.png", **count_figures(result)}
    with atomic_output_dir(out_dir, overwrite=overwrite, protect=protect) as tmp:
        (tmp / names["markdown"]).write_text(to_markdown(result), encoding="utf-8")
        write_json(tmp / names["json"], {MARKER: "compare", **result.to_dict(), **(extra or {})})
        plot(result, tmp / names["plot"])
        plot_counts(result, tmp)
    return {k: absolute_path(out_dir) / v for k, v in names.items()}
