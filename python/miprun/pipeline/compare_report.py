"""A comparison written out: a Markdown table, a JSON file and a bar chart, in one guarded folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from miprun.output.guard import MARKER, absolute_path, atomic_output_dir
from miprun.pipeline.compare import CompareResult
from miprun.util.jsonio import write_json

__all__ = ["to_markdown", "plot", "write_outputs"]


def to_markdown(result: CompareResult) -> str:
    """The comparison as a Markdown table (one row per selector, the unpruned model first)."""
    texts = list(result.baseline.perplexity)
    task_names = list(result.baseline.tasks)
    head = (["method", "removed"] + [f"ppl {Path(t).name}" for t in texts] + [f"acc {t}" for t in task_names]
            + ["score s", "select s", "evaluations", "damage"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in [result.baseline] + result.rows:
        cells = [r.method, str(r.removed)] + [f"{r.perplexity[t]:.4f}" for t in texts]
        cells += [f"{r.tasks.get(t, float('nan')):.4f}" for t in task_names]
        cells += [f"{r.score_s:.2f}", f"{r.select_s:.4f}", str(r.evaluations),
                  "" if r.objective is None else f"{r.objective:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    s = result.settings
    lines.append("")
    lines.append(f"{s['num_blocks']} blocks, {s['num_remove']} removed; calibration {s['calibration_shape']} tokens; "
                 f"perplexity seq_len {s['seq_len']}"
                 + ("" if s["stride"] is None else f", stride {s['stride']}")
                 + f"; oracle criterion: {Path(s['oracle_criterion']).name}. "
                 "damage = sum over removed runs of 1 - normalised score, under the row's own table.")
    return "\n".join(lines) + "\n"


def plot(result: CompareResult, path: str | Path) -> Path:
    """Bar chart of each row's perplexity on the first evaluation text (log scale), unpruned as a line."""
    import matplotlib  # optional-weight plotting library, loaded only when a plot is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text = next(iter(result.baseline.perplexity))
    labels = [r.method for r in result.rows]
    values = [r.perplexity[text] for r in result.rows]
    colours = ["tab:blue" if r.selector == "fast_block_select" else
               "tab:green" if r.selector in ("optimal", "greedy") else
               "tab:red" if r.selector == "exhaustive_perplexity" else "tab:gray" for r in result.rows]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(labels) + 1.5), dpi=90)
    y = np.arange(len(labels))
    ax.barh(y, values, color=colours)
    ax.axvline(result.baseline.perplexity[text], color="black", linestyle="--", linewidth=1, label="unpruned")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"perplexity on {Path(text).name} (log scale)")
    ax.set_title(f"{result.settings['num_remove']} of {result.settings['num_blocks']} blocks removed", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p


def write_outputs(result: CompareResult, out_dir: str | Path, *, extra: dict | None = None,
                  overwrite: bool = False, protect=()) -> dict[str, Path]:
    """Write ``compare.md``, ``compare.json`` and ``compare.png`` into the folder ``out_dir``, atomically.

    The folder is checked like every miprun output (:mod:`miprun.output.guard`): it is new,
    or with ``overwrite`` an earlier miprun output or empty, and overlaps no input.
    """
    names = {"markdown": "compare.md", "json": "compare.json", "plot": "compare.png"}
    with atomic_output_dir(out_dir, overwrite=overwrite, protect=protect) as tmp:
        (tmp / names["markdown"]).write_text(to_markdown(result), encoding="utf-8")
        write_json(tmp / names["json"], {MARKER: "compare", **result.to_dict(), **(extra or {})})
        plot(result, tmp / names["plot"])
    return {k: absolute_path(out_dir) / v for k, v in names.items()}
