"""The plots miprun writes: beside a report, the score table as a heatmap and the single-block
scores; beside a comparison over several block counts, a measure against the share of blocks
removed, one line per selector (:func:`plot_against_removed`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from miprun.scoring.table import MI_ESTIMATORS, ScoreTable
from miprun.selection.plan import Plan, runs_of

__all__ = ["plot_score_table", "plot_single_block", "standard_plots", "plot_against_removed"]


def _score_label(estimator: str) -> str:
    if estimator in MI_ESTIMATORS:
        return f"MI, {estimator} (nats; higher = more redundant)"
    if estimator == "cosine":
        return "Block Influence 1 - cos (higher = more important)"
    if estimator == "angular":
        return "angular distance (higher = more important)"
    return estimator


def _figure(width: float, height: float):
    # Figure + Agg canvas directly: no pyplot, so the caller's matplotlib backend is never touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional: loaded only when a plot is drawn
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_score_table(table: ScoreTable, path: str | os.PathLike, *, pruned: Sequence[int] | None = None,
                     title: str | None = None) -> Path:
    """Heatmap of the score table: run start on x, run length on y, raw score as colour.

    Parameters
    ----------
    table : ScoreTable
        ``values[s, L-1]`` is drawn at (x=s, y=L); runs past the last block are blank.
    path : path
        PNG file to write.
    pruned : sequence of int, optional
        Removed blocks; the cells of their maximal runs are outlined.
    title : str, optional
        Figure title (default names the estimator).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from matplotlib.patches import Rectangle


    T, R = table.num_blocks, table.max_run
    fig = _figure(min(4 + 0.28 * T, 24), min(2.2 + 0.45 * R, 10))
    ax = fig.add_subplot()
    values = np.ma.masked_invalid(table.values.T)  # (max_run, num_blocks): row L-1 holds runs of length L
    im = ax.imshow(values, origin="lower", aspect="auto", interpolation="nearest", cmap="viridis",
                   extent=(-0.5, T - 0.5, 0.5, R + 0.5))
    fig.colorbar(im, ax=ax, label=_score_label(table.estimator))
    for s, length in runs_of(pruned or []):
        if length <= R:
            ax.add_patch(Rectangle((s - 0.5, length - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xlabel("run start (block index)")
    ax.set_ylabel("run length (blocks)")
    ax.set_xticks(range(0, T, max(1, T // 20)))
    ax.set_yticks(range(1, R + 1, max(1, R // 10)))
    ax.set_title(title or f"score table ({table.estimator}, {T} blocks)"
                 + (" - removed runs outlined in red" if pruned else ""))
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def plot_single_block(table: ScoreTable, path: str | os.PathLike, *, pruned: Sequence[int] | None = None,
                      title: str | None = None) -> Path:
    """Bar plot of the single-block scores ``values[:, 0]``; removed blocks drawn in red.

    Parameters
    ----------
    table : ScoreTable
        The score table.
    path : path
        PNG file to write.
    pruned : sequence of int, optional
        Removed blocks, highlighted.
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    T = table.num_blocks
    scores = np.nan_to_num(table.single_block(), nan=0.0)
    gone = set(pruned or [])
    colours = ["tab:red" if b in gone else "tab:blue" for b in range(T)]
    fig = _figure(min(4 + 0.25 * T, 24), 3.5)
    ax = fig.add_subplot()
    ax.bar(range(T), scores, color=colours)
    ax.set_xlabel("block")
    ax.set_ylabel(_score_label(table.estimator))
    ax.set_xticks(range(0, T, max(1, T // 20)))
    ax.set_title(title or f"single-block scores ({table.estimator})" + (" - removed in red" if gone else ""))
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def standard_plots(table: ScoreTable | None, plan: Plan | None = None) -> dict[str, Callable[[Path], Path]]:
    """The report's plots as ``{file name: writer}``, for ``save_pruned(..., plots=...)``."""
    if table is None:
        return {}
    pruned = plan.removed if plan is not None else None
    return {
        "score_table.png": partial(plot_score_table, table, pruned=pruned),
        "single_block.png": partial(plot_single_block, table, pruned=pruned),
    }


def plot_against_removed(series: Mapping[str, Sequence[tuple[float, float]]], path: str | os.PathLike, *,
                         ylabel: str, baseline: float | None = None, baseline_label: str = "dense (unpruned)",
                         log_y: bool = False, title: str | None = None) -> Path:
    """A measure against the share of blocks removed: one line per selector, the dense model as a horizontal line.

    Parameters
    ----------
    series : mapping of str to sequence of (float, float)
        Line label -> ``(share removed, value)`` points, drawn in order of the share; NaN
        values are left out (a selector that has no plan at some count).
    path : path
        PNG file to write.
    ylabel : str
        What the values are (e.g. ``"perplexity on wiki.test.raw"``).
    baseline : float, optional
        The unpruned model's value, drawn as a dashed horizontal line.
    baseline_label : str
        Its legend entry.
    log_y : bool
        Logarithmic y axis (perplexity).
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _figure(10.0, 5.0)
    ax = fig.add_subplot()
    for i, (label, points) in enumerate(series.items()):
        pts = sorted((float(x), float(y)) for x, y in points if not np.isnan(y))
        if pts:
            xs, ys = zip(*pts)
            style = ("-", "-.", ":")[(i // 10) % 3]  # the colour cycle has 10 colours: past it, another dash
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, linestyle=style, label=label)
    if baseline is not None and not np.isnan(baseline):
        ax.axhline(baseline, color="black", linestyle="--", linewidth=1, label=baseline_label)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("share of blocks removed")
    ax.set_ylabel(ylabel + (" (log scale)" if log_y else ""))
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: many selectors
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
