"""``prune``: score, select, remove and save, with every input checked before the long work."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from miprun.selection.plan import Plan
from miprun.scoring.table import ScoreTable

__all__ = ["PruneResult", "prune", "estimator_for", "blocks_to_remove", "BASELINE_ESTIMATORS"]

#: Baseline selectors read a table of their own distance, not MI.
BASELINE_ESTIMATORS = {"shortgpt": "cosine", "gromov": "angular"}
#: Selectors that only read single-block scores: max_run 1 is all they need.
SINGLE_BLOCK_SELECTORS = ("greedy", "shortgpt")


@dataclass
class PruneResult:
    """What :func:`prune` produced.

    Attributes
    ----------
    plan : Plan
        The removed blocks and how they were chosen.
    table : ScoreTable
        The score table the selector read.
    model : transformers.PreTrainedModel or None
        The pruned model in memory (None with ``offload=True``: it was never loaded whole).
    out_dir : Path or None
        Where the pruned checkpoint was written (None when not saved).
    report : dict
        The content of ``report.json``.
    timings : dict
        Seconds per step: ``calibrate``, ``load``, ``score``, ``select``, ``surgery``, ``save``.
    """

    plan: Plan
    table: ScoreTable
    model: Any
    out_dir: Path | None
    report: dict
    timings: dict[str, float] = field(default_factory=dict)


def estimator_for(selector: str, estimator: str | None) -> str:
    """The estimator a selector reads: ``shortgpt`` -> cosine, ``gromov`` -> angular, else ``hist`` by default."""
    need = BASELINE_ESTIMATORS.get(selector)
    if need is None:
        if estimator in BASELINE_ESTIMATORS.values():
            raise ValueError(f"selector {selector!r} reads mutual information; estimator={estimator!r} is a distance "
                             f"used by the baselines (shortgpt: cosine, gromov: angular); use hist, ksg or gaussian")
        return estimator or "hist"
    if estimator is not None and estimator != need:
        raise ValueError(f"selector {selector!r} reads {need!r} scores (its paper's measure); got estimator="
                         f"{estimator!r}. Leave the estimator out, or set it to {need!r}")
    return need


def blocks_to_remove(num_blocks: int | None, ratio: float | None, total: int) -> int:
    """The number of blocks to remove from exactly one of ``num_blocks`` and ``ratio`` (rounded)."""
    if (num_blocks is None) == (ratio is None):
        raise ValueError("give exactly one of num_blocks (--num-blocks) and ratio (--ratio)")
    if ratio is not None:
        if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
            raise ValueError(f"ratio must be a fraction in (0, 1), got {ratio!r}")
        n = int(round(ratio * total))
        if not 1 <= n < total:
            raise ValueError(f"ratio={ratio} of the model's {total} blocks rounds to {n} blocks; "
                             f"choose a ratio that removes between 1 and {total - 1} blocks")
        return n
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or not 1 <= num_blocks < total:
        raise ValueError(f"num_blocks={num_blocks!r} but the model has {total} blocks; "
                         f"remove between 1 and {total - 1}")
    return num_blocks


def _is_path(obj) -> bool:
    return isinstance(obj, str) or isinstance(obj, os.PathLike)


def prune(model, calibration, *, num_blocks: int | None = None, ratio: float | None = None,
          estimator: str | None = None, reduction: str = "pooled", selector: str = "fast_block_select",
          out_dir=None, overwrite: bool = False, seed: int = 0, tokenizer=None, offload: bool | str = False,
          n_samples: int = 128, seq_len: int | None = None, max_run: int | None = None, bins="auto",
          binning: str = "quantile", k: int = 3, bias_correction: str | None = None,
          max_samples: int | None = None, skip_first: int = 0, batch_size: int = 8, device=None, dtype=None,
          trust_remote_code: bool = False, select_options: dict | None = None, plots: bool = True,
          progress: bool = True, backend: str = "auto", data_parallel=None) -> PruneResult:
    """Remove the ``num_blocks`` most redundant blocks of a causal LM, chosen by mutual information.

    Every input is checked before the model's weights are loaded: the selector and
    estimator, the number of blocks against the model's, the output folder, and the
    calibration text (tokenised first).

    Parameters
    ----------
    model : transformers PreTrainedModel, or str / Path
        A loaded causal LM, or a local folder / Hugging Face Hub id.
    calibration : LongTensor (n_samples, seq_len), str / Path, or (source, tokenizer)
        Token ids, or a text source for :func:`miprun.calibrate.load_calibration` (with
        ``tokenizer``, else the model's own tokenizer).
    num_blocks, ratio
        How many blocks to remove: exactly one of a count ``1 <= num_blocks < T`` or a
        fraction of ``T`` (rounded).
    estimator : {"hist", "ksg", "gaussian", "cosine", "angular"}, optional
        Default ``hist``; the baselines ``shortgpt`` and ``gromov`` read ``cosine`` and
        ``angular`` and refuse any other.
    reduction, bins, binning, k, bias_correction, max_samples, skip_first
        Estimator settings, see :func:`miprun.score.score_states`.
    selector : str
        One of :data:`miprun.select.SELECTORS`.
    out_dir : path, optional
        Where to write the pruned checkpoint (never the input folder or inside it; refused
        when it exists unless ``overwrite``). Nothing is written when None.
    seed : int
        Seeds the calibration windows and the estimator.
    tokenizer : transformers tokenizer, optional
        For a calibration text source and for saving; default the model's own.
    offload : bool or "auto"
        Stream the weights block by block (models larger than memory); ``model`` must be a
        local folder, and the checkpoint is written shard by shard. ``"auto"`` streams when
        the model would not fit in the device's free memory.
    n_samples, seq_len
        Calibration windows: ``seq_len`` defaults to ``min(2048, max_position_embeddings)``.
    max_run : int, optional
        Longest run scored; default ``num_blocks`` (1 for ``greedy`` and ``shortgpt``, which
        read single blocks only).
    batch_size, device, dtype
        Samples per forward call; the compute device (a model given by name is loaded
        there; default CPU, or where a loaded model's embeddings are); the dtype a named
        model loads in (default: the checkpoint's).
    trust_remote_code : bool
        Allow a checkpoint's own code (off by default).
    select_options : dict, optional
        Extra keyword arguments for :func:`miprun.select.select` (``scale``, ``log_base``, ...).
    plots : bool
        Write the score-table and single-block plots beside the report.
    progress : bool
        Progress bars (only when stderr is a terminal).
    backend : str
        Estimator implementation (``auto``: by device).
    data_parallel : miprun.distributed.DataParallel, optional
        Share the calibration samples across processes (e.g. under ``torchrun``): each
        scores its contiguous shard and all get the single-process table; only the main
        process writes ``out_dir`` (the others return ``out_dir=None``).

    Returns
    -------
    PruneResult
    """
    from miprun.selection.select import SELECTORS
    timings: dict[str, float] = {}
    if selector not in SELECTORS:
        raise ValueError(f"selector must be one of {SELECTORS}, got {selector!r}")
    est = estimator_for(selector, estimator)
    from miprun._native import core
    core()  # the selectors run in the native core: say it is missing now, not after scoring
    if offload == "auto":
        from miprun.hidden.stream import resolve_offload
        offload = _is_path(model) and resolve_offload("auto", str(model), device=device, dtype=dtype,
                                                      n_samples=n_samples, seq_len=seq_len or 2048)
    if offload and not _is_path(model):
        raise ValueError("offload=True streams weights from a checkpoint folder: pass the model's folder, "
                         "not a loaded model")

    # --- everything cheap first: config, block count, output folder, calibration tokens
    from miprun.calibration.windows import window_length
    from miprun.models.loading import inspect_model
    from miprun.scoring.score import resolve_calibration
    t = time.perf_counter()
    info = inspect_model(model, trust_remote_code=trust_remote_code, require_family=True)
    name, folder, config, total = info.name, info.folder, info.config, info.num_blocks
    n_remove = blocks_to_remove(num_blocks, ratio, total)
    if out_dir is not None:
        from miprun.output.save import check_output_dir
        out_dir = check_output_dir(out_dir, overwrite=overwrite, source_dir=folder)
    if offload and out_dir is None:
        raise ValueError("offload=True writes the pruned checkpoint shard by shard: give out_dir (--out)")
    seq_len = window_length(seq_len, config)
    tok = tokenizer
    # the model's own tokenizer: from its folder or hub id, never by guessing from an in-memory model's class name
    tok_source = name if _is_path(model) else folder
    if tok is None and (_is_path(calibration) or out_dir is not None):
        if tok_source is None and _is_path(calibration):
            raise ValueError("calibration text needs a tokenizer: pass tokenizer=... (the model in memory has no "
                             "folder to load one from), or give token ids")
        if tok_source is not None:
            tok = model_tokenizer(tok_source, trust_remote_code=trust_remote_code, required=_is_path(calibration))
    ids, calib_desc = resolve_calibration(calibration, tokenizer=tok, n_samples=n_samples, seq_len=seq_len,
                                          seed=seed)
    check_vocabulary(ids, config)
    timings["calibrate"] = time.perf_counter() - t

    # --- the long work
    run = max_run if max_run is not None else (1 if selector in SINGLE_BLOCK_SELECTORS else n_remove)
    score_ids, shard_kwargs, main = ids, {}, True
    if data_parallel is not None and data_parallel.world_size > 1:
        shard = data_parallel.shard(ids, skip_first=skip_first)
        score_ids, main = shard.input_ids, data_parallel.is_main
        shard_kwargs = dict(reducer=data_parallel.reducer, token_offset=shard.token_offset,
                            total_tokens=shard.total_tokens)
        device = device if device is not None else data_parallel.device
    score_kwargs = dict(estimator=est, reduction=reduction, max_run=run, bins=bins, binning=binning, k=k,
                        bias_correction=bias_correction, max_samples=max_samples, seed=seed, skip_first=skip_first,
                        batch_size=batch_size, device=device, progress=progress and main, backend=backend,
                        **shard_kwargs)
    from miprun.scoring.score import score_blocks
    t = time.perf_counter()
    if offload:
        timings["load"] = 0.0
        table = score_blocks(folder, score_ids, offload=True, dtype=dtype, trust_remote_code=trust_remote_code,
                             **score_kwargs)
        source = {"path": str(folder), "model_type": getattr(config, "model_type", None), "num_blocks": total}
    else:
        if _is_path(model):
            from miprun.models.loading import load_model
            model = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
            timings["load"] = time.perf_counter() - t
        else:
            timings["load"] = 0.0
        from miprun.output.report import describe_source
        source = describe_source(model, name)
        t = time.perf_counter()
        table = score_blocks(model, score_ids, **score_kwargs)
    table.settings["calibration"] = calib_desc
    timings["score"] = time.perf_counter() - t

    from miprun.selection.select import select
    t = time.perf_counter()
    plan = select(table, n_remove, selector=selector, **(select_options or {}))
    timings["select"] = time.perf_counter() - t

    t = time.perf_counter()
    if not offload:
        from miprun.output.surgery import remove_blocks
        remove_blocks(model, plan.removed)
    timings["surgery"] = time.perf_counter() - t

    settings = {"model": name, "num_remove": n_remove, "ratio": ratio, "selector": selector, "estimator": est,
                "reduction": reduction, "max_run": run, "seed": seed, "device": str(device) if device else None,
                "dtype": None if dtype is None else str(dtype), "offload": bool(offload),
                "calibration": calib_desc, "select_options": dict(select_options or {})}
    from miprun.output.report import build_report, standard_plots
    if data_parallel is not None:
        settings["world_size"] = data_parallel.world_size
    report = build_report(plan, table, settings, timings, source, pruned_model=None if offload else model)
    if out_dir is not None and not main:
        out_dir = None  # the main process writes the one output
    if out_dir is not None:
        t = time.perf_counter()
        figures = standard_plots(table, plan) if plots else None
        if offload:
            from miprun.output.shards import write_pruned_checkpoint
            out_dir = write_pruned_checkpoint(folder, plan.removed, out_dir, report=report, overwrite=overwrite,
                                              tokenizer_dir=folder, plots=figures)
        else:
            from miprun.output.save import save_pruned
            out_dir = save_pruned(model, tok, out_dir, report=report, overwrite=overwrite, source_dir=folder,
                                  plots=figures)
        timings["save"] = time.perf_counter() - t
        report["timings"] = {k: float(v) for k, v in timings.items()}
        _rewrite_report(Path(out_dir) / "report.json", report)
    return PruneResult(plan=plan, table=table, model=None if offload else model, out_dir=out_dir, report=report,
                       timings=timings)


# ----------------------------------------------------------------------------- helpers
def check_vocabulary(ids: torch.Tensor, config) -> None:
    """Refuse token ids outside the model's vocabulary (a tokenizer from another model)."""
    from miprun.models.blocks import text_config
    vocab = getattr(text_config(config), "vocab_size", None)
    if isinstance(vocab, int) and int(ids.max()) >= vocab:
        raise ValueError(f"calibration token id {int(ids.max())} is outside the model's vocabulary of {vocab}; "
                         f"use the model's own tokenizer")


def model_tokenizer(name: str, *, trust_remote_code: bool = False, required: bool = True):
    """The model's own tokenizer; None when it has none and ``required`` is false."""
    from miprun.models.loading import load_tokenizer
    try:
        return load_tokenizer(name, trust_remote_code=trust_remote_code)
    except (ValueError, OSError):
        if required:
            raise ValueError(f"no tokenizer could be loaded from {name}; give one with tokenizer=... "
                             f"(--tokenizer PATH), or token ids") from None
        return None  # token ids given: the checkpoint is saved without tokenizer files


def _rewrite_report(path: Path, report: dict) -> None:
    """Replace ``report.json`` (now with the save time) through a temporary file: never half-written."""
    from miprun.output.save import write_json
    tmp = path.with_name(f".{path.name}.tmp")
    write_json(tmp, report)
    os.replace(tmp, path)
