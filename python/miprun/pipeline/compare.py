"""Head-to-head of the block selectors on one model and one calibration set.

Every MI estimator and reduction scores the model once; on each table run
Fast-Block-Select (MI-PRUN), ``optimal`` (the exact minimum of the additive damage) and
``greedy`` (the best single blocks). The baselines score their own statistic: ShortGPT
(Block Influence, ``cosine``) and Gromov et al. (``angular``); ``random`` draws a seeded
subset. The measured rows choose by measuring plans on the held-back calibration windows,
as ``prune`` does: ``default`` is what ``miprun prune`` does by default (Fast-Block-Select on
the hist table, verified with its portfolio and refined by measured swaps), ``sleb`` is
SLEB's search. When there are few subsets (``C(T, N) <= oracle_limit``) the exhaustive
*oracle* measures the perplexity of every one on the first evaluation text and keeps the
best: the ground truth the others are judged against.

Every plan is then evaluated the same way: each evaluation text is cut into windows of
``seq_len`` tokens and every distinct plan (healed or not) is measured on them by one
:class:`~miprun.measure.Measurer` (held-out perplexity, and the KL divergence from the
unpruned model), in sweeps over the blocks that share what the plans share. So the whole
comparison runs wherever the weights are: in memory, streamed from the shards, spread by a
device map, across ``torchrun`` processes. Zero-shot tasks and sliding-window perplexity
(``stride``) need the model in memory: each plan prunes a copy (:mod:`miprun.pipeline.compare_eval`).

With ``heals`` (``scale``, ``linear``), every selector's plan is also evaluated healed
(:mod:`miprun.heal`, fitted on the calibration windows as ``prune --heal`` does), one more row
per heal. ``num_remove`` may be a list of block counts: every table is scored once, up to
the longest run the largest count needs, and every selector runs at every count (one row per
selector and count), so that perplexity and accuracy can be drawn against the share of
blocks removed (:mod:`miprun.pipeline.compare_report`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from miprun.calibration.split import WindowSplit, split_windows
from miprun.hidden.options import ExecutionOptions
from miprun.hidden.runner import as_source
from miprun.measure import Measurer
from miprun.pipeline.compare_eval import PlanEvaluator
from miprun.scoring.options import TABLE_REDUCTIONS, ScoringOptions
from miprun.scoring.score import score_tokens
from miprun.selection.measured import Measured
from miprun.selection.options import AUTO_REFINE, AUTO_SCREEN, AUTO_VERIFY, CONFIRM, DEFAULT_CRITERION
from miprun.selection.select import select
from miprun.selection.sleb import sleb
from miprun.selection.verify import companion_runs, verify

__all__ = ["MI_VARIANTS", "MI_SELECTORS", "MEASURED_ROWS", "CompareRow", "CompareResult", "compare",
           "parse_variants", "check_counts"]

#: (estimator, reduction) pairs scored for the MI selectors.
MI_VARIANTS = (("hist", "pooled"), ("hist", "per_dim"), ("ksg", "pooled"), ("ksg", "per_dim"),
               ("ksg", "projection"), ("gaussian", "pooled"), ("gaussian", "per_dim"))
#: Selectors run on every MI table.
MI_SELECTORS = ("fast_block_select", "optimal", "greedy")
#: Rows chosen by measuring plans on the held-back calibration windows: ``prune``'s default, and SLEB.
#: ``default`` may name its criterion and turn screening off: ``default:loss``, ``default:kl:full``.
MEASURED_ROWS = ("default", "sleb")


@dataclass
class CompareRow:
    """One selector's plan and how its pruned model did.

    Attributes
    ----------
    method : str
        Row label, e.g. ``fast_block_select[hist/pooled]``, ``shortgpt``, ``default``, ``oracle``.
    selector : str
    estimator, reduction : str or None
    removed : list[int]
        Blocks removed (0-based, sorted).
    perplexity : dict[str, float]
        Per evaluation text (label -> perplexity).
    kl : dict[str, float]
        Per evaluation text, the mean KL divergence (nats per token) of the pruned model's
        next-token distribution from the unpruned model's.
    tasks : dict[str, float]
        Per task, accuracy (``acc``) in [0, 1].
    score_s : float
        Seconds spent scoring the table this row's selector read (shared by the rows of that table).
    select_s : float
        Seconds of the selection itself (measured rows: with their measurements).
    evaluations : int
        Distinct scores the selector read (measured rows and the oracle: plans measured).
    objective : float or None
        Additive damage of the plan under its own table (sum over removed runs of
        ``1 - normalised score``); None where it has no table.
    num_remove : int or None
        Blocks this row removes (0 for the unpruned model).
    heal : str or None
        The heal applied after the cut (``scale``, ``linear``), None for none.
    healed_cuts : list of dict
        With ``heal``: each cut (``removed``, the ``method`` it got or None, ``reason``).
    """

    method: str
    selector: str
    estimator: str | None
    reduction: str | None
    removed: list[int]
    perplexity: dict[str, float] = field(default_factory=dict)
    kl: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, float] = field(default_factory=dict)
    score_s: float = 0.0
    select_s: float = 0.0
    evaluations: int = 0
    objective: float | None = None
    num_remove: int | None = None
    heal: str | None = None
    healed_cuts: list = field(default_factory=list)


@dataclass
class CompareResult:
    """All rows, the unpruned reference, the score tables and the settings.

    ``settings["counts"]`` lists the block counts compared (``settings["num_remove"]`` is
    that count itself when there is one, else the list); ``rows`` come count by count, in
    that order, each with its ``num_remove``.
    """

    rows: list[CompareRow]
    baseline: CompareRow
    tables: dict[str, dict]
    settings: dict

    @property
    def counts(self) -> list[int]:
        """The block counts compared, in the order given."""
        return list(self.settings.get("counts") or [self.settings["num_remove"]])

    def to_dict(self) -> dict:
        return {"settings": self.settings, "baseline": asdict(self.baseline),
                "rows": [asdict(r) for r in self.rows], "tables": self.tables}


def parse_variants(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"hist:pooled,ksg:per_dim"`` -> pairs; None -> :data:`MI_VARIANTS`; ``""`` or ``"none"`` -> no MI table."""
    if text is None:
        return MI_VARIANTS
    if text.strip().lower() in ("", "none"):
        return ()
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        est, _, red = item.partition(":")
        red = red or "pooled"
        if est not in ("hist", "ksg", "gaussian") or red not in TABLE_REDUCTIONS.get(est, ()):
            raise ValueError(f"--estimators entry {item!r} is not an MI estimator:reduction pair; choose from "
                             + ", ".join(f"{e}:{r}" for e, r in MI_VARIANTS))
        out.append((est, red))
    if not out:
        raise ValueError(f"--estimators {text!r} names no estimator")
    return tuple(dict.fromkeys(out))


def check_counts(num_remove, num_blocks: int | None = None) -> list[int]:
    """The block counts to compare, checked: an int or a sequence of ints, each positive, distinct and
    (given ``num_blocks``) below the number of blocks. Raises ValueError naming the bad value."""
    many = isinstance(num_remove, (list, tuple))
    counts = list(num_remove) if many else [num_remove]
    if not counts:
        raise ValueError("num_remove names no block count; give at least one, e.g. 3 or [3, 6, 9]")
    seen: set[int] = set()
    for n in counts:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise ValueError(f"num_remove: {n!r} is not a whole number of blocks")
        if n < 1:
            raise ValueError(f"num_remove: {n} removes no block; every count must be at least 1")
        if num_blocks is not None and n >= num_blocks:
            raise ValueError(f"num_remove: {n} but the model has {num_blocks} blocks; "
                             f"remove between 1 and {num_blocks - 1} blocks")
        if int(n) in seen:
            raise ValueError(f"num_remove: {n} is given twice; give each block count once")
        seen.add(int(n))
    return [int(n) for n in counts]


@dataclass
class _Setup:
    """What every step of a comparison shares."""

    source: object
    calibration: torch.Tensor
    split: WindowSplit
    seed: int
    max_samples: int | None
    batch_size: int
    criterion: str
    data_parallel: object
    say: Callable[[str], None]
    tables: dict = field(default_factory=dict)
    measurer: object = None


def compare(model, tokenizer, calibration: torch.Tensor, num_remove: int | Sequence[int], *,
            eval_ids: dict[str, torch.Tensor],
            seq_len: int, stride: int | None = None, ppl_batch_size: int = 1,
            variants: Sequence[tuple[str, str]] = MI_VARIANTS, tasks=None, limit: int | None = None,
            data_dir=None, task_batch_size: int = 8, oracle_limit: int = 64, seed: int = 0,
            max_samples: int | None = None, batch_size: int = 8, heals: Sequence[str] = (),
            measured: Sequence[str] = MEASURED_ROWS, criterion: str = DEFAULT_CRITERION, held_back: float = 0.25,
            data_parallel=None, log: Callable[[str], None] | None = None) -> CompareResult:
    """Run every selector on the same model and calibration tokens and evaluate each pruned model.

    Parameters
    ----------
    model : transformers.PreTrainedModel or BlockSource
        The model to prune, never modified: loaded in memory, or a block source
        (:func:`miprun.hidden.sources.open_source`: streamed, device map).
    tokenizer : transformers tokenizer
        For zero-shot tasks (may be None without ``tasks``).
    calibration : LongTensor, shape (n_samples, calib_seq_len)
        Calibration token ids, shared by every estimator; the last ``held_back`` share is
        held back for the measured rows and the heals' checks (:mod:`miprun.calibration.split`).
    num_remove : int or sequence of int
        Blocks to remove, or several counts (positive, distinct, below the number of
        blocks): each table is scored once, up to the largest count's runs, and every
        selector runs at every count.
    eval_ids : dict[str, LongTensor of shape (n_tokens,)]
        Evaluation texts, tokenised (label -> ids); the first one is the oracle's criterion.
    seq_len, stride, ppl_batch_size
        The perplexity protocol: non-overlapping windows of ``seq_len`` tokens, measured by
        the measurer; a ``stride`` (the sliding window of :func:`miprun.evaluate.perplexity`)
        needs the model in memory.
    variants : sequence of (estimator, reduction)
        MI tables to score; each is read by every selector of :data:`MI_SELECTORS`.
    tasks, limit, data_dir, task_batch_size
        Optional zero-shot tasks (:func:`miprun.evaluate.zeroshot.evaluate_tasks`); need the model in memory.
    oracle_limit : int
        The oracle runs when ``C(T, N)`` is at most this (0: never).
    seed : int
        Seeds the estimators (``ksg``) and the random baseline.
    max_samples : int, optional
        KSG subsample size (default: the estimator's).
    batch_size : int
        Windows per block call while scoring and measuring.
    heals : sequence of str
        Heals (``scale``, ``linear``) each selector's plan is also evaluated with, one row
        each (``<method>+heal:<name>``).
    measured : sequence of str
        Measured rows: ``default`` (optionally ``default:kl`` or ``default:loss`` for its
        criterion, and ``:full`` for no screening) and ``sleb`` (``()``: none; then every
        window is scored).
    criterion : {"kl", "loss"}
        What a plain ``default`` row's verify and refine rank plans by.
    held_back : float
        Share of the calibration windows held back (as ``prune``'s ``held_back``).
    data_parallel : DataParallel, optional
        ``torchrun``: every process scores and measures its share; all get the same rows.
    log : callable, optional
        Receives one progress line per step.
    """
    say = log or (lambda _msg: None)
    source = as_source(model)
    _check(source, eval_ids, heals, measured, tasks, stride)
    counts = check_counts(num_remove, source.num_blocks)
    split = split_windows(int(calibration.shape[0]), held_back, score_held_back=not measured)
    setup = _Setup(source, calibration, split, seed, max_samples, batch_size, criterion, data_parallel, say)
    evaluator = PlanEvaluator(source, tokenizer, eval_ids, seq_len=seq_len, stride=stride,
                              ppl_batch_size=ppl_batch_size, tasks=tasks, limit=limit, data_dir=data_dir,
                              task_batch_size=task_batch_size, seed=seed, batch_size=batch_size,
                              data_parallel=data_parallel)
    rows, subsets = [], []
    for count in counts:
        rows += _rows_for(setup, variants, measured, count, max(counts))
        subsets.append(math.comb(source.num_blocks, count))
        if 0 < subsets[-1] <= oracle_limit:
            rows.append(CompareRow(method="oracle", selector="exhaustive_perplexity", estimator=None, reduction=None,
                                   removed=[], evaluations=subsets[-1], num_remove=count))
        else:
            say(f"oracle skipped: C({source.num_blocks}, {count}) = {subsets[-1]} subsets > "
                f"oracle_limit={oracle_limit}")
    rows += _healed_rows(setup, evaluator, rows, tuple(dict.fromkeys(heals)))
    baseline = CompareRow(method="unpruned", selector="none", estimator=None, reduction=None, removed=[],
                          num_remove=0)
    evaluator.evaluate(baseline, rows, say)
    single = len(counts) == 1
    settings = {"num_blocks": source.num_blocks, "num_remove": counts[0] if single else counts, "counts": counts,
                "seq_len": seq_len, "stride": stride, "calibration_shape": list(calibration.shape),
                "calibration_split": split.to_dict(), "variants": [list(v) for v in variants], "measured":
                list(measured), "criterion": criterion, "tasks": tasks, "limit": limit, "oracle_limit": oracle_limit,
                "heals": list(dict.fromkeys(heals)), "subsets": subsets[0] if single else subsets, "seed": seed,
                "eval_texts": {k: int(v.numel()) for k, v in eval_ids.items()},
                "oracle_criterion": next(iter(eval_ids)), "placement": source.kind, "measurements": evaluator.cost()}
    tables = {label: table.to_dict() for label, (table, _) in setup.tables.items()}
    return CompareResult(rows=rows, baseline=baseline, tables=tables, settings=settings)


def _check(source, eval_ids, heals, measured, tasks, stride) -> None:
    if not eval_ids:
        raise ValueError("compare needs at least one evaluation text (eval_ids)")
    for h in heals:
        if h not in ("scale", "linear"):
            raise ValueError(f"heals: {h!r} is not a heal; choose from scale, linear")
    for m in measured:
        measured_spec(m, DEFAULT_CRITERION)
    if (tasks or stride is not None) and not source.holds_model:
        what = "zero-shot tasks" if tasks else "a sliding-window perplexity (stride)"
        raise ValueError(f"{what} evaluate a pruned copy of the model held in memory; the model is "
                         f"{source.kind.replace('_', ' ')}: drop --offload / --device-map, or drop "
                         f"{'--tasks' if tasks else '--stride'}")


def measured_spec(name: str, criterion: str) -> tuple[str, str, bool]:
    """A measured row's name read as ``(row, criterion, screen)``: ``default[:kl|:loss][:full]`` or ``sleb``."""
    row, *rest = name.split(":")
    screen = "full" not in rest
    named = [r for r in rest if r != "full"]
    ok = (row == "default" and len(named) <= 1 and all(r in ("kl", "loss") for r in named)
          and len(rest) == len(set(rest))) or (row == "sleb" and not rest)
    if not ok:
        raise ValueError(f"measured row {name!r} is not one of: default, default:kl, default:loss (each optionally "
                         f"with :full, no screening), sleb")
    return row, named[0] if named else criterion, screen


def _table(setup: _Setup, label: str, estimator: str, reduction: str, max_run: int, companions=None):
    """The score table of ``label``, scored once (on the scored windows), with the seconds it took."""
    if label not in setup.tables:
        t0 = time.perf_counter()
        options = ScoringOptions(estimator=estimator, reduction=reduction, seed=setup.seed,
                                 max_samples=setup.max_samples)
        execution = ExecutionOptions(batch_size=setup.batch_size, device=str(setup.source.device)
                                     if setup.source.holds_model else None)
        scored = score_tokens(setup.source, setup.split.rows(setup.calibration, "scored"), options, execution,
                              config=setup.source.config, max_run=max_run, progress=False, companions=companions,
                              data_parallel=setup.data_parallel)
        setup.tables[label] = (scored.table, time.perf_counter() - t0)
        setup.say(f"scored {label} in {setup.tables[label][1]:.2f} s")
    return setup.tables[label]


def _rows_for(setup: _Setup, variants, measured, count: int, longest: int) -> list[CompareRow]:
    """The plans of every selector at ``count`` blocks (evaluated later, all together)."""
    rows = []
    jobs = [(f"{e}/{r}", e, r, longest, MI_SELECTORS) for e, r in variants]
    jobs += [("cosine", "cosine", "pooled", 1, ("shortgpt",)), ("angular", "angular", "pooled", longest, ("gromov",))]
    for label, estimator, reduction, max_run, selectors in jobs:
        table, score_s = _table(setup, label, estimator, reduction, max_run)
        for selector in selectors:
            t0 = time.perf_counter()
            plan = select(table, count, selector=selector)
            method = f"{selector}[{label}]" if selectors is MI_SELECTORS else selector
            rows.append(_row(method, plan, count, score_s, time.perf_counter() - t0,
                             reduction if selectors is MI_SELECTORS else None))
    rows += [_measured_row(setup, name, count, longest) for name in measured]
    removed = sorted(int(b) for b in np.random.default_rng(setup.seed).choice(setup.source.num_blocks, size=count,
                                                                               replace=False))
    rows.append(CompareRow(method=f"random(seed={setup.seed})", selector="random", estimator=None, reduction=None,
                           removed=removed, num_remove=count))
    return rows


def _row(method: str, plan, count: int, score_s: float, select_s: float, reduction=None) -> CompareRow:
    return CompareRow(method=method, selector=plan.selector, estimator=plan.estimator, reduction=reduction,
                      removed=list(plan.removed), score_s=score_s, select_s=select_s,
                      evaluations=int(plan.evaluations), objective=plan.objective, num_remove=count)


def _measured_row(setup: _Setup, name: str, count: int, longest: int) -> CompareRow:
    """``default`` (prune's default: Fast-Block-Select verified and refined) or ``sleb``, measured on the held-back
    windows by one measurer shared across counts and rows."""
    row, criterion, screen = measured_spec(name, setup.criterion)
    if setup.measurer is None:
        ids = setup.split.rows(setup.calibration, "measured")
        setup.measurer = Measurer(setup.source, ids, batch_size=setup.batch_size, screen=max(1, round(
            ids.shape[0] * AUTO_SCREEN)) if ids.shape[0] > 1 else 0, data_parallel=setup.data_parallel)
    t0 = time.perf_counter()
    if row == "sleb":
        plan = sleb(Measured(setup.measurer, criterion="loss"), setup.source.num_blocks, count)
        return _row("sleb", plan, count, 0.0, time.perf_counter() - t0)
    table, score_s = _table(setup, "default", "hist", "pooled", longest, companions=companion_runs(longest))
    measured = Measured(setup.measurer, criterion=criterion)
    plan = verify(table, count, measured, k=AUTO_VERIFY, refine_rounds=AUTO_REFINE, screen=screen, confirm=CONFIRM)
    out = _row(name, plan, count, score_s, time.perf_counter() - t0, "pooled")
    out.evaluations = measured.plans_measured
    return out


def _healed_rows(setup: _Setup, evaluator: PlanEvaluator, rows: list[CompareRow], heals) -> list[CompareRow]:
    """Every non-random plan healed with each heal (fitted as ``prune --heal`` does), one row each."""
    out = []
    for heal in heals:
        for row in [r for r in rows if r.selector not in ("random", "exhaustive_perplexity")]:
            cuts = evaluator.heal(row.removed, heal, setup.calibration, setup.split)
            out.append(dataclasses.replace(row, method=f"{row.method}+heal:{heal}", heal=heal, healed_cuts=cuts,
                                           perplexity={}, kl={}, tasks={}))  # its own results, not the row's
            setup.say(f"healed {out[-1].method}")
    return out
