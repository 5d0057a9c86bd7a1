"""What a pruning run records beside its checkpoint: ``report.json`` and two PNG plots.

The report says which blocks were removed (0-based indices in the input model), how they
were chosen (selector, estimator and its settings, the score table, MI evaluations), how
long each step took, what the model was before and after (blocks, parameters), and the
versions that produced it. The plots show the score table as a heatmap (run start x run
length) and the single-block scores as bars.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from miprun.selection.plan import Plan
from miprun.scoring.table import MI_ESTIMATORS, ScoreTable

__all__ = [
    "build_report",
    "describe_source",
    "count_parameters",
    "block_parameter_counts",
    "versions",
    "to_jsonable",
    "plot_score_table",
    "plot_single_block",
    "standard_plots",
    "REPORT_FORMAT_VERSION",
]

REPORT_FORMAT_VERSION = 1


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types: NaN/inf -> None, numpy/torch -> lists and numbers, Path -> str."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch.Tensor, without importing torch here
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj)]
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    return str(obj)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    """Versions of miprun, python, torch, transformers and the libraries that shape the numbers."""
    from miprun import __version__

    out: dict[str, Any] = {"miprun": __version__, "python": platform.python_version(),
                           "platform": platform.platform()}
    for dist in ("torch", "transformers", "numpy", "triton", "safetensors", "accelerate"):
        out[dist] = _version(dist)
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return out


def count_parameters(model) -> int:
    """Number of distinct parameters of a module (tied weights counted once)."""
    return int(sum(p.numel() for p in model.parameters()))


def block_parameter_counts(model) -> list[int]:
    """Parameters of each decoder block, in block order."""
    from miprun.models.blocks import find_blocks

    blocks, _ = find_blocks(model)
    return [count_parameters(b) for b in blocks]


def describe_source(model, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Describe the input model for the report; call it BEFORE removing blocks.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The unpruned model.
    path : path or str, optional
        Where it was loaded from (folder or hub name); defaults to ``model.name_or_path``.

    Returns
    -------
    dict
        ``path``, ``model_type``, ``architecture``, ``dtype``, ``num_blocks``, ``block_path``,
        ``num_parameters`` and ``block_parameters`` (per block, so that the count after
        removal follows without the pruned model).
    """
    from miprun.models.blocks import find_blocks

    blocks, block_path = find_blocks(model)
    config = getattr(model, "config", None)
    dtype = next((p.dtype for p in model.parameters()), None)
    return {
        "path": os.fspath(path) if path is not None else (getattr(model, "name_or_path", None) or None),
        "model_type": getattr(config, "model_type", None),
        "architecture": type(model).__name__,
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "num_blocks": len(blocks),
        "block_path": block_path,
        "num_parameters": count_parameters(model),
        "block_parameters": [count_parameters(b) for b in blocks],
    }


def _parameters(plan: Plan, source: Mapping[str, Any], pruned_model) -> dict[str, Any]:
    before = source.get("num_parameters")
    per_block = source.get("block_parameters")
    after = None
    if pruned_model is not None:
        after = count_parameters(pruned_model)
    elif before is not None and per_block is not None:
        after = int(before) - sum(int(per_block[i]) for i in plan.removed)
    removed = before - after if before is not None and after is not None else None
    return {
        "before": before,
        "after": after,
        "removed": removed,
        "removed_fraction": removed / before if removed is not None and before else None,
    }


def build_report(plan: Plan, table: ScoreTable | None, settings: Mapping[str, Any] | None = None,
                 timings: Mapping[str, float] | None = None,
                 source: Mapping[str, Any] | str | os.PathLike | None = None,
                 *, pruned_model=None) -> dict[str, Any]:
    """Assemble the content of ``report.json``.

    Parameters
    ----------
    plan : Plan
        The blocks removed and how they were chosen.
    table : ScoreTable or None
        The score table the selector read (None for selectors that read none).
    settings : mapping, optional
        Run settings (calibration source, sample count, sequence length, seed, device, ...).
    timings : mapping of str to float, optional
        Seconds per step (load, score, select, surgery, save, ...).
    source : mapping, path or str, optional
        The input model: preferably :func:`describe_source` of the unpruned model (gives
        parameter counts before and after); a path or hub name is recorded as ``path``.
    pruned_model : torch.nn.Module, optional
        The pruned model, to count parameters after removal directly.

    Returns
    -------
    dict
        JSON-ready (through :func:`to_jsonable`) with keys ``pruned_blocks`` (0-based, in
        the input model), ``kept_blocks``, ``runs``, ``num_blocks_before``,
        ``num_blocks_after``, ``selector``, ``estimator`` (``name`` and ``settings``),
        ``evaluations``, ``objective``, ``trace``, ``score_table``, ``settings``,
        ``timings`` (seconds), ``parameters`` (``before``, ``after``, ``removed``,
        ``removed_fraction``), ``source``, ``versions``, ``created`` (UTC, ISO 8601),
        ``format_version``.

    Raises
    ------
    ValueError
        When the plan, the table and the source disagree on the number of blocks.
    """
    if isinstance(source, (str, os.PathLike)):
        source = {"path": os.fspath(source)}
    source = dict(source or {})
    if table is not None and table.num_blocks != plan.num_blocks:
        raise ValueError(f"the plan is for {plan.num_blocks} blocks but the score table has {table.num_blocks}")
    if source.get("num_blocks") is not None and int(source["num_blocks"]) != plan.num_blocks:
        raise ValueError(f"the plan is for {plan.num_blocks} blocks but the source model has {source['num_blocks']}")
    plan_d = plan.to_dict()
    estimator_name = table.estimator if table is not None else plan.estimator
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pruned_blocks": plan_d["pruned_blocks"],
        "kept_blocks": plan_d["kept_blocks"],
        "runs": plan_d["runs"],
        "num_blocks_before": plan.num_blocks,
        "num_blocks_after": plan.num_blocks - len(plan.removed),
        "selector": plan.selector,
        "estimator": {"name": estimator_name, "settings": dict(table.settings) if table is not None else {}},
        "evaluations": plan.evaluations,
        "objective": plan.objective,
        "trace": plan.trace,
        "score_table": table.to_dict() if table is not None else None,
        "settings": dict(settings or {}),
        "timings": {str(k): float(v) for k, v in (timings or {}).items()},
        "parameters": _parameters(plan, source, pruned_model),
        "source": source,
        "versions": versions(),
    }


# --- plots -----------------------------------------------------------------------------------

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
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

    from miprun.selection.plan import runs_of

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
