"""What a pruning run records beside its checkpoint: ``report.json`` and two PNG plots.

The report says which blocks were removed (0-based indices in the input model), how they
were chosen (selector, estimator and its settings, the score table, MI evaluations), how
long each step took, what the model was before and after (blocks, parameters), and the
versions that produced it. The plots show the score table as a heatmap (run start x run
length) and the single-block scores as bars.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any

from miprun.models.blocks import find_blocks
from miprun.models.parameters import count_parameters
from miprun.selection.plan import Plan
from miprun.util.versions import versions
from miprun.scoring.table import ScoreTable

__all__ = [
    "build_report",
    "describe_source",
    "block_parameter_counts",
    "versions",
    "REPORT_FORMAT_VERSION",
]

REPORT_FORMAT_VERSION = 1


def block_parameter_counts(model) -> list[int]:
    """Parameters of each decoder block, in block order."""
    blocks, _ = find_blocks(model)
    return [count_parameters(b).total for b in blocks]


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
        "num_parameters": count_parameters(model).total,
        "block_parameters": [count_parameters(b).total for b in blocks],
    }


def _parameters(plan: Plan, source: Mapping[str, Any], pruned_model) -> dict[str, Any]:
    before = source.get("num_parameters")
    per_block = source.get("block_parameters")
    after = None
    if pruned_model is not None:
        after = count_parameters(pruned_model).total
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
