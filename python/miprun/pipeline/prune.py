"""``prune``: score, select, remove and save, with every input checked before the long work.

The flow, one function per step: :func:`_prepare` (options, model facts, output folder,
calibration tokens split once: everything cheap and checkable),
:func:`miprun.scoring.score.score_tokens` (one forward pass), :func:`_choose` (the plan: from
the scores, measured by verify and refine, or SLEB's), :func:`_heal` (optional: a map per
cut fitted on the calibration tokens), :func:`_check_plan` (the pruned, healed model measured
against the unpruned one), :func:`_remove` (surgery in memory, the maps folded) and
:func:`_write` (``save_pretrained``, or the checkpoint rewritten shard by shard with the maps
folded as it is written, with ``report.json`` written last inside the same atomic folder).
Every measurement goes through one :class:`~miprun.measure.Measurer` over the block source
scoring opened: in memory, streamed or device-mapped alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from miprun._native import core
from miprun.calibration.resolve import resolve_calibration
from miprun.calibration.split import WindowSplit, split_windows
from miprun.heal.fit import Healing, heal_cuts
from miprun.heal.options import DEFAULT_TUNE_BATCH
from miprun.heal.tune import tune_maps
from miprun.hidden.stream import resolve_offload
from miprun.measure import Measurer
from miprun.models.gguf import check_placement as check_gguf_placement
from miprun.models.loading import ModelInfo, inspect_model, load_tokenizer
from miprun.output.plots import standard_plots
from miprun.output.report import build_report, describe_source
from miprun.output.guard import check_output_dir
from miprun.output.gguf import write_pruned_gguf
from miprun.output.save import save_pruned
from miprun.output.shards import write_pruned_checkpoint
from miprun.output.surgery import remove_blocks
from miprun.pipeline.options import PruneOptions
from miprun.scoring.distributed import DataParallel
from miprun.scoring.score import score_tokens
from miprun.scoring.table import ScoreTable
from miprun.selection.measured import Measured
from miprun.selection.plan import Plan
from miprun.selection.select import damage, select
from miprun.selection.sleb import sleb
from miprun.selection.verify import verify

__all__ = ["PruneResult", "prune", "BrokenPlanError"]


class BrokenPlanError(ValueError):
    """The chosen plan leaves a model whose calibration perplexity is past ``max_ppl_ratio`` times the dense one."""


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
        The pruned model in memory (None when the weights were streamed: never loaded whole).
    out_dir : Path or None
        Where the pruned checkpoint was written (None when not saved).
    report : dict
        The content of ``report.json``.
    timings : dict
        Seconds per step: ``calibrate``, ``load``, ``score``, ``select``, ``heal``, ``surgery``, ``save``.
    options : PruneOptions
        Every setting of the run.
    """

    plan: Plan
    table: ScoreTable
    model: Any
    out_dir: Path | None
    report: dict
    timings: dict[str, float] = field(default_factory=dict)
    options: PruneOptions | None = None


@dataclass
class _Prepared:
    """The checked inputs of a run: model facts, how many blocks go, where output goes, the tokens."""

    info: ModelInfo
    num_remove: int
    protect: tuple
    out_dir: Path | None
    tokenizer: Any
    input_ids: torch.Tensor
    calibration: dict


def prune(model, calibration, options: PruneOptions | None = None, *, tokenizer=None,
          data_parallel: DataParallel | None = None, progress: bool = True, **settings) -> PruneResult:
    """Remove the most redundant blocks of a causal LM, chosen from their scores.

    Every input is checked before the model's weights are loaded: the options, the number
    of blocks against the model's, the output folder, and the calibration text (tokenised
    first).

    Parameters
    ----------
    model : transformers PreTrainedModel, or str / Path
        A loaded causal LM, or a local folder / Hugging Face Hub id.
    calibration : LongTensor (n_samples, seq_len), str / Path, or (source, tokenizer)
        Token ids, or a text source (read with ``tokenizer``, else the model's own).
    options : PruneOptions, optional
        Every setting. Instead, or on top, give the settings as keyword arguments, each
        routed to its step (see :meth:`PruneOptions.from_flat`): ``num_remove`` or
        ``ratio`` (required), ``selector``, ``estimator``, ``reduction``, ``max_run``,
        ``bins``, ``k``, ``seed``, ``n_samples``, ``seq_len``, ``batch_size``, ``device``,
        ``dtype``, ``offload``, ``device_map``, ``max_memory``, ``trust_remote_code``,
        ``verify``, ``portfolio``, ``refine``, ``heal``, ``heal_fit``, ``heal_ridge``,
        ``heal_objective``, ``heal_refit``, ``out_dir``, ``overwrite``, ``plots``, ``format``, ``max_ppl_ratio``, ...
    tokenizer : transformers tokenizer, optional
        For a calibration text source and for saving; default the model's own.
    data_parallel : DataParallel, optional
        Share the calibration samples across processes (``torchrun``): each scores its
        shard and all get the single-process table; only the main process writes.
    progress : bool
        Progress bars (only when stderr is a terminal).

    Returns
    -------
    PruneResult
    """
    options = _options(options, settings)
    core()  # the selectors run in the native core: say it is missing now, not after scoring
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prep = _prepare(model, calibration, options, tokenizer)
    options = options.resolved(int(prep.input_ids.shape[0]))  # verify="auto" decided, and recorded so
    split = split_windows(int(prep.input_ids.shape[0]), options.calibration.held_back,
                          score_held_back=not options.selection.measures_plans)
    timings["calibrate"] = time.perf_counter() - t

    main = data_parallel is None or data_parallel.is_main
    t = time.perf_counter()
    scored = score_tokens(model, split.rows(prep.input_ids, "scored"), options.scoring, options.execution,
                          config=prep.info.config, max_run=options.max_run(prep.num_remove, prep.info.num_blocks),
                          companions=options.selection.companions(prep.num_remove),
                          data_parallel=data_parallel, progress=progress and main)
    table, source = scored.table, scored.source
    table.settings["calibration"] = prep.calibration
    timings["load"] = scored.load_s
    timings["score"] = time.perf_counter() - t - scored.load_s

    t = time.perf_counter()
    measurer = _measurer(source, prep.input_ids, split, options, data_parallel, progress and main)
    plan = _choose(table, prep.num_remove, measurer, options)
    timings["select"] = time.perf_counter() - t
    healed = _heal(source, plan, prep, split, options, data_parallel, progress and main, timings)
    checked = _check_plan(measurer, plan, healed, options, timings)
    if healed is not None and source.holds_model:
        healed.fold(source.blocks)
    pruned, described = _remove(source, plan, prep, timings)
    settings_out = {"model": prep.info.name, "num_remove": prep.num_remove, "calibration": prep.calibration,
                    "calibration_split": split.to_dict(), "options": options.to_dict()}
    if data_parallel is not None:
        settings_out["world_size"] = data_parallel.world_size
    out_dir = prep.out_dir if main else None  # the main process writes the one output

    built: list[dict] = []

    def report() -> dict:  # built once, last, so that it records the save time too
        if not built:
            built.append(build_report(plan, table, settings_out, timings, described, pruned_model=pruned))
            built[0].update(_measured(plan, measurer))
            if healed is not None:
                built[0]["heal"] = healed.report
            if checked is not None:
                built[0]["plan_check"] = checked
        return built[0]

    if out_dir is not None:
        out_dir = _write(source, pruned, plan, table, prep, options, report, timings, healed)
    return PruneResult(plan=plan, table=table, model=pruned, out_dir=out_dir, report=report(), timings=timings,
                       options=options)


def _options(options: PruneOptions | None, settings: dict) -> PruneOptions:
    if options is None:
        return PruneOptions.from_flat(**settings)
    if settings:
        raise TypeError(f"give the settings either as options=PruneOptions(...) or as keyword arguments, not both "
                        f"(got {sorted(settings)} besides options)")
    return options


def _prepare(model, calibration, options: PruneOptions, tokenizer) -> _Prepared:
    """Everything cheap first: config, block count, output folder, calibration tokens."""
    execution = options.execution
    info = inspect_model(model, trust_remote_code=execution.trust_remote_code, require_family=True)
    if info.gguf_file is not None:
        check_gguf_placement(info.gguf_file, offload=execution.offload, device_map=execution.device_map)
    elif options.output.format == "gguf":
        raise ValueError(f"format='gguf' (--format gguf) copies the kept blocks of a GGUF input file, and {info.name} "
                         f"is not one (a .gguf file, or a folder holding one); use format='hf' (the default)")
    if execution.offload is True and not isinstance(model, (str, Path)):
        raise ValueError("offload=True streams weights from a checkpoint folder: pass the model's folder, "
                         "not a loaded model")
    num_remove = options.selection.count(info.num_blocks)
    is_text = not isinstance(calibration, (torch.Tensor, tuple, list))
    protect = (calibration,) if is_text else ()
    out_dir = None
    if options.output.out_dir is not None:
        out_dir = check_output_dir(options.output.out_dir, overwrite=options.output.overwrite,
                                   source_dir=info.folder, protect=protect)
    if tokenizer is None and (is_text or out_dir is not None):
        tokenizer = _model_tokenizer(info, model, required=is_text, trust_remote_code=execution.trust_remote_code)
    ids, desc = resolve_calibration(calibration, tokenizer=tokenizer, options=options.calibration,
                                    config=info.config)
    if options.heal.tune_asked and execution.offload == "auto" and info.folder is not None and \
            resolve_offload("auto", info.folder, config=info.config, device=execution.device,
                            dtype=execution.load_dtype, n_samples=int(ids.shape[0]), seq_len=int(ids.shape[1])):
        raise ValueError(f"heal_tune={options.heal.tune_asked} runs the pruned model forward and backward, which "
                         f"needs the weights in memory or placed by a device map, and offload='auto' would stream "
                         f"{info.name} (it does not fit in memory): use --device-map, or --heal-tune 0")
    return _Prepared(info=info, num_remove=num_remove, protect=protect, out_dir=out_dir, tokenizer=tokenizer, input_ids=ids,
                     calibration=desc)


def _model_tokenizer(info: ModelInfo, model, *, required: bool, trust_remote_code: bool):
    """The model's own tokenizer, from its folder or hub id (never guessed from an in-memory model's class)."""
    where = info.name if isinstance(model, (str, Path)) else info.folder
    if where is None:
        if required:
            raise ValueError("calibration text needs a tokenizer: pass tokenizer=... (the model in memory has no "
                             "folder to load one from), or give token ids")
        return None
    try:
        return load_tokenizer(where, trust_remote_code=trust_remote_code)
    except FileNotFoundError:
        raise  # a path that does not exist, or an unreachable Hub: its own message says what to do
    except (ValueError, OSError):
        if required:
            raise ValueError(f"the model {where} has no tokenizer miprun can load; give one with tokenizer=... "
                             f"(--tokenizer PATH), or token ids") from None
        return None  # token ids given: the checkpoint is saved without tokenizer files


def _heal(source, plan: Plan, prep: _Prepared, split: WindowSplit, options: PruneOptions,
          data_parallel: DataParallel | None, progress: bool, timings: dict) -> Healing | None:
    """Fit a map per cut (``options.heal``), folding nothing yet.

    The maps are fitted on the windows the split gives the heal and checked on the
    held-back ones. With data parallelism each process fits on its share of the windows
    (the main one also holds the held-back ones) and the sums are all-reduced, so every
    process gets the same maps.
    """
    heal = options.heal
    if not heal.active:
        return None
    t = time.perf_counter()
    fit_ids, held_ids = split.rows(prep.input_ids, "heal_fit"), split.rows(prep.input_ids, "heal_check")
    reducer = None
    if data_parallel is not None and data_parallel.world_size > 1:
        fit_ids = data_parallel.shard(fit_ids).input_ids
        held_ids = held_ids if data_parallel.is_main else held_ids[:0]
        reducer = data_parallel.reducer
    healing = heal_cuts(source, plan.removed, fit_ids, held_ids, options=heal, reducer=reducer,
                        batch_size=options.execution.batch_size, progress=progress, fold=False)
    steps = heal.tune_steps_for(streamed=source.streams_weights)
    if heal.tune_steps and not steps:  # what auto would tune in memory, the streamed weights cannot
        healing.report["tune"] = {"steps": 0, "kept": False, "reason": "the weights are streamed (--offload): tuning "
                                  "needs them in memory or placed by a device map; the closed form is kept"}
    elif steps:
        healing.report["tune"] = tune_maps(source, plan.removed, healing, split.rows(prep.input_ids, "heal_fit"),
                                           split.rows(prep.input_ids, "heal_check"), steps=steps,
                                           lr=heal.heal_tune_lr,
                                           batch_size=min(options.execution.batch_size, DEFAULT_TUNE_BATCH),
                                           seed=options.calibration.seed, data_parallel=data_parallel)
    timings["heal"] = time.perf_counter() - t
    return healing


def _measurer(source, ids: torch.Tensor, split: WindowSplit, options: PruneOptions,
              data_parallel: DataParallel | None, progress: bool) -> Measurer:
    """The one measurer of the run: the held-back windows, over the block source scoring opened."""
    measured = split.rows(ids, "measured")
    return Measurer(source, measured, batch_size=options.execution.batch_size,
                    screen=options.selection.screen_windows(int(measured.shape[0])),
                    data_parallel=data_parallel, progress=progress)


def _choose(table: ScoreTable, num_remove: int, measurer: Measurer, options: PruneOptions) -> Plan:
    """The plan: SLEB's measured search, the selector's plan verified and refined by measurement, or the scores'."""
    selection = options.selection
    if selection.selector == "sleb":
        plan = sleb(Measured(measurer, criterion="loss"), table.num_blocks, num_remove)
        plan.objective, plan.estimator = damage(plan.removed, table.normalised()), table.estimator
        return plan
    if selection.verify:
        windows = int(measurer.windows())
        return verify(table, num_remove, measurer, **selection.verify_kwargs(windows))
    return select(table, num_remove, **selection.select_kwargs())


def _check_plan(measurer: Measurer, plan: Plan, healed: Healing | None, options: PruneOptions,
                timings: dict) -> dict | None:
    """The pruned (and healed) model's perplexity on the held-back windows against the unpruned model's.

    Measured before anything is written or folded; a plan past ``max_ppl_ratio`` is refused
    with :class:`BrokenPlanError`. These windows are also the ones ``verify`` chose the plan
    on and the heal's held-out ones: a sanity check against collapse, not an unbiased estimate.
    """
    max_ratio = options.output.max_ppl_ratio
    if max_ratio is None or math.isinf(max_ratio):
        return None
    t = time.perf_counter()
    candidate = healed.candidate(plan.removed) if healed is not None else tuple(plan.removed)
    dense, pruned = measurer.measure([(), candidate])
    timings["plan_check"] = time.perf_counter() - t
    out = {"windows": measurer.windows(), "dense_perplexity": dense.perplexity, "pruned_perplexity":
           pruned.perplexity, "ratio": _exp(pruned.loss - dense.loss), "kl": pruned.kl, "max_ratio": float(max_ratio),
           "healed": healed is not None and bool(healed.maps)}
    if not out["ratio"] <= max_ratio:
        raise BrokenPlanError(
            f"the plan {plan.removed} ({plan.selector}) breaks the model: perplexity {out['pruned_perplexity']:.4g} "
            f"on the {out['windows']} held-back calibration windows against {out['dense_perplexity']:.4g} unpruned "
            f"({out['ratio']:.3g} x, over max_ppl_ratio {max_ratio:g}); nothing was written. Remove fewer blocks, "
            f"measure candidates with verify (--verify 4), try another selector, or raise --max-ppl-ratio")
    return out


def _exp(x: float) -> float:
    """``exp(x)``, inf past float range or for a non-finite loss (a collapsed model), never an error."""
    return math.exp(x) if math.isfinite(x) and x < 709.0 else math.inf


def _remove(source, plan: Plan, prep: _Prepared, timings: dict) -> tuple[Any, dict]:
    """Remove the plan's blocks from a model held in memory; describe the input for the report."""
    t = time.perf_counter()
    # streamed or device-mapped weights were never whole in memory: the checkpoint is rewritten from its shards
    model = source.model if source.holds_model else None
    if model is None:
        config = prep.info.config
        described = {"path": str(prep.info.folder or prep.info.name),
                     "model_type": getattr(config, "model_type", None), "num_blocks": prep.info.num_blocks}
    else:
        described = describe_source(model, prep.info.name)
        remove_blocks(model, plan.removed)
    timings["surgery"] = time.perf_counter() - t
    return model, described


def _write(source, pruned, plan: Plan, table: ScoreTable, prep: _Prepared, options: PruneOptions, report,
           timings: dict, healed: Healing | None = None) -> Path:
    """Write the pruned checkpoint, plots and (last) the report into ``out_dir``, atomically."""
    t = time.perf_counter()
    figures = standard_plots(table, plan) if options.output.plots else None

    def final_report() -> dict:
        timings["save"] = time.perf_counter() - t
        return report()

    overwrite = options.output.overwrite
    if options.output.format == "gguf":  # the input file's kept blocks, copied as they are
        return write_pruned_gguf(prep.info.gguf_file, plan.removed, prep.out_dir, report=final_report,
                                 plots=figures, overwrite=overwrite, protect=prep.protect)
    if pruned is None:
        return write_pruned_checkpoint(prep.info.folder, plan.removed, prep.out_dir, report=final_report,
                                       overwrite=overwrite, tokenizer_dir=prep.info.folder, plots=figures,
                                       protect=prep.protect,
                                       fold=healed.fold_tensor if healed is not None and healed.maps else None,
                                       trust_remote_code=options.execution.trust_remote_code)
    return save_pruned(pruned, prep.tokenizer, prep.out_dir, report=final_report, overwrite=overwrite,
                       source_dir=prep.info.folder, plots=figures, protect=prep.protect)


def _measured(plan: Plan, measurer: Measurer) -> dict:
    """``report["sleb"]`` or ``report["verify"]`` (candidates, values, what they cost) and ``report["measure"]``."""
    out: dict = {"measure": measurer.summary()}
    kind = "sleb" if plan.selector == "sleb" else "verify"
    entries = [t for t in plan.trace if t.get("kind") == ("summary" if kind == "sleb" else "verify")]
    if entries:
        out[kind] = dict(entries[-1])
        if kind == "sleb":
            out[kind]["steps"] = [t for t in plan.trace if t.get("kind") == "step"]
        out[kind]["windows"] = "held back from scoring (calibration_split.measured)"
    return out
