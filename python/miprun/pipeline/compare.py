"""Head-to-head of the block selectors on one model and one calibration set.

Every MI estimator and reduction scores the model once; on each table run
Fast-Block-Select (MI-PRUN), ``optimal`` (the exact minimum of the additive damage) and
``greedy`` (the best single blocks). The baselines score their own statistic: ShortGPT
(Block Influence, ``cosine``) and Gromov et al. (``angular``); ``random`` draws a seeded
subset. When there are few subsets (``C(T, N) <= oracle_limit``) the exhaustive *oracle*
measures the perplexity of every one and keeps the best: the ground truth the others are
judged against. Each distinct plan is pruned (on a copy) and evaluated once, the same way for
all: perplexity on the evaluation texts and, optionally, zero-shot tasks.

With ``heals`` (``scale``, ``linear``), every selector's plan is also evaluated healed
(:mod:`miprun.heal`, fitted on the calibration tokens), one more row per heal.

``num_remove`` may be a list of block counts: every table is scored once, up to the longest
run the largest count needs, and every selector runs at every count (one row per selector
and count), so that perplexity and accuracy can be drawn against the share of blocks
removed (:mod:`miprun.pipeline.compare_report`).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from miprun.evaluate.perplexity import perplexity
from miprun.evaluate.zeroshot import evaluate_tasks
from miprun.heal.fit import heal_cuts
from miprun.heal.options import HealOptions
from miprun.models.blocks import find_blocks
from miprun.output.surgery import remove_blocks
from miprun.scoring.options import TABLE_REDUCTIONS
from miprun.scoring.score import score_blocks
from miprun.selection.select import select

__all__ = ["MI_VARIANTS", "MI_SELECTORS", "CompareRow", "CompareResult", "compare", "parse_variants", "check_counts"]

#: (estimator, reduction) pairs scored for the MI selectors.
MI_VARIANTS = (("hist", "pooled"), ("hist", "per_dim"), ("ksg", "pooled"), ("ksg", "per_dim"),
               ("ksg", "projection"), ("gaussian", "pooled"), ("gaussian", "per_dim"))
#: Selectors run on every MI table.
MI_SELECTORS = ("fast_block_select", "optimal", "greedy")


@dataclass
class CompareRow:
    """One selector's plan and how its pruned model did.

    Attributes
    ----------
    method : str
        Row label, e.g. ``fast_block_select[hist/pooled]``, ``shortgpt``, ``oracle``.
    selector : str
    estimator, reduction : str or None
    removed : list[int]
        Blocks removed (0-based, sorted).
    perplexity : dict[str, float]
        Per evaluation text (label -> perplexity).
    tasks : dict[str, float]
        Per task, accuracy (``acc``) in [0, 1].
    score_s : float
        Seconds spent scoring the table this row's selector read (shared by the rows of that table).
    select_s : float
        Seconds of the selection itself (the oracle: of evaluating every subset).
    evaluations : int
        Distinct scores the selector read (the oracle: subsets evaluated).
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
    """``"hist:pooled,ksg:per_dim"`` -> pairs; None -> :data:`MI_VARIANTS`."""
    if text is None:
        return MI_VARIANTS
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


class _Evaluator:
    """Prune a copy of the model and evaluate it, once per distinct plan."""

    def __init__(self, model, tokenizer, eval_ids: dict[str, torch.Tensor], *, seq_len: int, stride: int | None,
                 ppl_batch_size: int, tasks, limit, data_dir, task_batch_size: int, seed: int,
                 calibration: torch.Tensor | None = None, batch_size: int = 8):
        self.model, self.tokenizer, self.eval_ids = model, tokenizer, eval_ids
        self.calibration, self.batch_size = calibration, batch_size
        self.seq_len, self.stride, self.ppl_batch_size = seq_len, stride, ppl_batch_size
        self.tasks, self.limit, self.data_dir = tasks, limit, data_dir
        self.task_batch_size, self.seed = task_batch_size, seed
        self.cache: dict[tuple, tuple[dict, dict]] = {}
        self.cuts: dict[tuple, list] = {}  # (blocks, heal) -> what the heal did to each cut

    def __call__(self, removed: Sequence[int], heal: str | None = None) -> tuple[dict, dict]:
        blocks = tuple(sorted(int(b) for b in removed))
        key = (blocks, heal)
        if key not in self.cache:
            pruned = self.model
            if blocks:
                pruned = copy.deepcopy(self.model)
                if heal is not None:  # fitted on the calibration tokens, as prune --heal does
                    options = HealOptions(heal=heal)
                    fit, held = options.split(self.calibration)
                    report = heal_cuts(pruned, list(blocks), fit, held, options=options,
                                       batch_size=self.batch_size).report
                    self.cuts[key] = [{k: c[k] for k in ("removed", "method", "reason")} for c in report["cuts"]]
                remove_blocks(pruned, list(blocks))
            ppl = {name: perplexity(pruned, ids, seq_len=self.seq_len, stride=self.stride,
                                    batch_size=self.ppl_batch_size).perplexity
                   for name, ids in self.eval_ids.items()}
            acc = {}
            if self.tasks:
                res = evaluate_tasks(pruned, self.tokenizer, self.tasks, data_dir=self.data_dir, limit=self.limit,
                                     batch_size=self.task_batch_size, seed=self.seed)
                acc = {name: r.metrics.get("acc", float("nan")) for name, r in res.items()}
            del pruned
            self.cache[key] = (ppl, acc)
        return self.cache[key]


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


def compare(model, tokenizer, calibration: torch.Tensor, num_remove: int | Sequence[int], *,
            eval_ids: dict[str, torch.Tensor],
            seq_len: int, stride: int | None = None, ppl_batch_size: int = 1,
            variants: Sequence[tuple[str, str]] = MI_VARIANTS, tasks=None, limit: int | None = None,
            data_dir=None, task_batch_size: int = 8, oracle_limit: int = 64, seed: int = 0,
            max_samples: int | None = None, batch_size: int = 8, heals: Sequence[str] = (),
            log: Callable[[str], None] | None = None) -> CompareResult:
    """Run every selector on the same model and calibration tokens and evaluate each pruned model.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The model to prune; it is never modified (each plan prunes a deep copy).
    tokenizer : transformers tokenizer
        For zero-shot tasks (may be None without ``tasks``).
    calibration : LongTensor, shape (n_samples, calib_seq_len)
        Calibration token ids, shared by every estimator.
    num_remove : int or sequence of int
        Blocks to remove, or several counts (positive, distinct, below the number of
        blocks): each table is scored once, up to the largest count's runs, and every
        selector runs at every count.
    eval_ids : dict[str, LongTensor of shape (n_tokens,)]
        Evaluation texts, tokenised (label -> ids); the first one is the oracle's criterion.
    seq_len, stride, ppl_batch_size
        The perplexity protocol (:func:`miprun.evaluate.perplexity`).
    variants : sequence of (estimator, reduction)
        MI tables to score; each is read by every selector of :data:`MI_SELECTORS`.
    tasks, limit, data_dir, task_batch_size
        Optional zero-shot tasks (:func:`miprun.zeroshot.evaluate_tasks`).
    oracle_limit : int
        The oracle runs when ``C(T, N)`` is at most this (0: never).
    seed : int
        Seeds the estimators (``ksg``) and the random baseline.
    max_samples : int, optional
        KSG subsample size (default: the estimator's).
    batch_size : int
        Calibration samples per forward pass while scoring.
    heals : sequence of str
        Heals (``scale``, ``linear``) each selector's plan is also evaluated with, one row
        each (``<method>+heal:<name>``).
    log : callable, optional
        Receives one progress line per step.

    Returns
    -------
    CompareResult
    """

    say = log or (lambda _msg: None)
    if not eval_ids:
        raise ValueError("compare needs at least one evaluation text (eval_ids)")
    total = len(find_blocks(model)[0])
    counts = check_counts(num_remove, total)
    longest = max(counts)
    device = next(model.parameters()).device
    heals = tuple(dict.fromkeys(heals))
    for h in heals:
        if h not in ("scale", "linear"):
            raise ValueError(f"heals: {h!r} is not a heal; choose from scale, linear")
    evaluate = _Evaluator(model, tokenizer, eval_ids, seq_len=seq_len, stride=stride,
                          ppl_batch_size=ppl_batch_size, tasks=tasks, limit=limit, data_dir=data_dir,
                          task_batch_size=task_batch_size, seed=seed, calibration=calibration, batch_size=batch_size)

    def scored(estimator: str, reduction: str, max_run: int):
        t0 = time.perf_counter()
        table = score_blocks(model, calibration, estimator=estimator, reduction=reduction, max_run=max_run,
                             seed=seed, max_samples=max_samples, batch_size=batch_size, device=device,
                             progress=False)
        return table, time.perf_counter() - t0

    base_ppl, base_acc = evaluate([])
    baseline = CompareRow(method="unpruned", selector="none", estimator=None, reduction=None, removed=[],
                          perplexity=base_ppl, tasks=base_acc, num_remove=0)
    say(f"{'unpruned':<36} perplexity {_first(base_ppl):.4f}")
    rows: list[CompareRow] = []
    tables: dict[str, dict] = {}
    # each table once, scored where the first count reads it, up to the runs the largest count needs
    jobs = [(f"{e}/{r}", e, r, longest, MI_SELECTORS) for e, r in variants]
    jobs += [("cosine", "cosine", "pooled", 1, ("shortgpt",)), ("angular", "angular", "pooled", longest, ("gromov",))]
    done: dict[str, tuple] = {}
    subsets = []
    for count in counts:
        for label, estimator, reduction, max_run, selectors in jobs:
            if label not in done:
                done[label] = scored(estimator, reduction, max_run)
                tables[label] = done[label][0].to_dict()
                say(f"scored {label} in {done[label][1]:.2f} s")
            table, score_s = done[label]
            for selector in selectors:
                method = f"{selector}[{label}]" if selectors is MI_SELECTORS else selector
                red = reduction if selectors is MI_SELECTORS else None
                rows.append(_selector_row(method, table, selector, count, score_s, red, evaluate, say))
                rows += [_healed_row(rows[-1], h, evaluate, say) for h in heals]
        rows.append(_random_row(total, count, seed, evaluate, say))
        n_subsets = math.comb(total, count)
        subsets.append(n_subsets)
        if 0 < n_subsets <= oracle_limit:
            rows.append(_oracle_row(total, count, evaluate, say))
        else:
            say(f"oracle skipped: C({total}, {count}) = {n_subsets} subsets > oracle_limit={oracle_limit}")
    single = len(counts) == 1
    settings = {"num_blocks": total, "num_remove": counts[0] if single else counts, "counts": counts,
                "seq_len": seq_len, "stride": stride,
                "calibration_shape": list(calibration.shape), "variants": [list(v) for v in variants],
                "tasks": tasks, "limit": limit, "oracle_limit": oracle_limit, "heals": list(heals),
                "subsets": subsets[0] if single else subsets, "seed": seed,
                "eval_texts": {k: int(v.numel()) for k, v in eval_ids.items()},
                "oracle_criterion": next(iter(eval_ids))}
    return CompareResult(rows=rows, baseline=baseline, tables=tables, settings=settings)


def _selector_row(method, table, selector, num_remove, score_s, reduction, evaluate, say) -> CompareRow:
    """One selector's plan on one table, and how its pruned model did."""
    t0 = time.perf_counter()
    plan = select(table, num_remove, selector=selector)
    select_s = time.perf_counter() - t0
    ppl, acc = evaluate(plan.removed)
    say(f"{method:<36} removes {plan.removed}  perplexity {_first(ppl):.4f}")
    return CompareRow(method=method, selector=plan.selector, estimator=table.estimator, reduction=reduction,
                      removed=list(plan.removed), perplexity=ppl, tasks=acc, score_s=score_s, select_s=select_s,
                      evaluations=int(plan.evaluations), objective=plan.objective, num_remove=num_remove)


def _healed_row(row: CompareRow, heal: str, evaluate, say) -> CompareRow:
    """The same plan as ``row``, healed with ``heal`` before its blocks are removed."""
    ppl, acc = evaluate(row.removed, heal)
    method = f"{row.method}+heal:{heal}"
    say(f"{method:<36} removes {row.removed}  perplexity {_first(ppl):.4f}")
    return dataclasses.replace(row, method=method, perplexity=ppl, tasks=acc, heal=heal,
                               healed_cuts=evaluate.cuts.get((tuple(row.removed), heal), []))


def _first(ppl: dict) -> float:
    return next(iter(ppl.values()))


def _random_row(total, num_remove, seed, evaluate, say) -> CompareRow:
    t0 = time.perf_counter()
    removed = sorted(int(b) for b in np.random.default_rng(seed).choice(total, size=num_remove, replace=False))
    select_s = time.perf_counter() - t0
    ppl, acc = evaluate(removed)
    say(f"{'random':<36} removes {removed}  perplexity {_first(ppl):.4f}")
    return CompareRow(method=f"random(seed={seed})", selector="random", estimator=None, reduction=None,
                      removed=removed, perplexity=ppl, tasks=acc, select_s=select_s, num_remove=num_remove)


def _oracle_row(total, num_remove, evaluate, say) -> CompareRow:
    t0 = time.perf_counter()
    best, best_ppl, n = None, math.inf, 0
    for subset in itertools.combinations(range(total), num_remove):
        ppl = _first(evaluate(subset)[0])
        n += 1
        if ppl < best_ppl:  # strict: ties keep the lexicographically first subset
            best, best_ppl = list(subset), ppl
    ppl, acc = evaluate(best)
    say(f"{'oracle':<36} removes {best}  perplexity {best_ppl:.4f} ({n} subsets)")
    return CompareRow(method="oracle", selector="exhaustive_perplexity", estimator=None, reduction=None,
                      removed=best, perplexity=ppl, tasks=acc, select_s=time.perf_counter() - t0, evaluations=n,
                      num_remove=num_remove)
