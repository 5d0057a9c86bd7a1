"""Choose the blocks to remove from a score table (or from run scores computed on demand).

Every selector returns a :class:`~miprun.plan.Plan`. Scores are *oriented*: higher means
more redundant, better to remove. The selectors:

``fast_block_select``
    MI-PRUN's heuristic (the paper's section 3.3), which scores only a few runs.
``optimal``
    The exact minimum, by dynamic programming, of the additive damage: the sum over the
    removed runs of ``1 - score`` with scores normalised to ``[0, 1]``.
``exhaustive``
    Every subset of ``num_remove`` blocks under the same damage; the ground truth for small
    models.
``greedy``
    The ``num_remove`` best single blocks (the paper's ablation "without DPI").
``shortgpt``
    Greedy on Block Influence ``1 - cos`` (Men et al., 2024); needs a table scored with
    estimator ``"cosine"``.
``gromov``
    The single run of ``num_remove`` blocks with the least angular distance between its
    input and output (Gromov et al., 2024); needs a table scored with estimator
    ``"angular"`` and ``max_run >= num_remove``.
With a measurer, the measured searches build on these: :func:`miprun.selection.verify.verify`
(the selector's K best plans and the other selectors' plans, measured, then refined by
measured swaps) and :func:`miprun.selection.sleb.sleb` (SLEB's search, Song et al., 2024).

Every plan's ``objective`` is the additive damage of its runs, read from the table's
normalised scores (None where the table does not hold all its runs, or for run scores given
by a callable), so any selector can be compared with ``optimal``. ``evaluations`` is the
number of distinct run scores the selector read.
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import Callable, Union

import numpy as np

from miprun._native import core
from miprun.selection.plan import Plan, runs_of
from miprun.scoring.table import DISTANCE_ESTIMATORS, MI_ESTIMATORS, ScoreTable

#: Selectors that read a score table (or run scores on demand).
TABLE_SELECTORS = ("fast_block_select", "optimal", "exhaustive", "greedy", "shortgpt", "gromov")
#: Every selector: ``sleb`` measures plans instead (:func:`miprun.selection.sleb.sleb`).
SELECTORS = TABLE_SELECTORS + ("sleb",)
#: Keyword arguments ``select`` took before the measured searches had their own functions.
_MOVED = {"loss": "verify/sleb", "verify": "verify", "portfolio": "verify", "refine": "verify"}
SCALES = ("raw", "normalised")

RunScore = Callable[[int, int], float]
Scores = Union[ScoreTable, RunScore]


def select(
    scores: Scores,
    num_remove: int,
    *,
    selector: str = "fast_block_select",
    num_blocks: int | None = None,
    scale: str = "raw",
    log_base: float = math.e,
    allow_touching: bool = True,
    max_iterations: int = 100,
    max_subsets: int = 50_000_000,
    **moved,
) -> Plan:
    """Choose ``num_remove`` blocks to remove.

    Parameters
    ----------
    scores : ScoreTable or callable
        A score table, or ``score(start, length) -> float``: the oriented score (higher:
        more removable) of the run of blocks ``start..start+length-1``, computed on demand
        (then ``num_blocks`` is required). With a callable, ``fast_block_select`` calls it
        at most once per run; ``optimal`` and ``exhaustive`` call it for every run up to
        length ``num_remove`` and read its values as normalised scores in ``[0, 1]``
        (damage ``1 - score``); ``shortgpt`` and ``gromov`` need a table.
    num_remove : int
        Number of blocks to remove, ``1 <= num_remove < num_blocks``.
    selector : str
        One of :data:`TABLE_SELECTORS`.
    num_blocks : int, optional
        Number of blocks of the model; required with a callable, checked against a table.
    scale : {"raw", "normalised"}
        What Fast-Block-Select sums (in its estimates and its choice of runs) for a table of
        an MI estimator: ``"raw"`` sums MI in nats, the paper's reading; ``"normalised"``
        sums information coefficients ``sqrt(1 - exp(-2 MI))``. Distance estimators
        (``cosine``, ``angular``) always use normalised scores. The other selectors do not
        depend on it: ``greedy`` ranks the same either way, and ``optimal``/``exhaustive``
        minimise the normalised damage. A callable's scores are used as given.
    log_base : float
        Base of the logarithm in Fast-Block-Select's ``K = min(ceil(log L) + 5, S)``. The
        paper writes ``log`` without a base and its Figure 3 (``K = 5, 6, 5`` for
        ``L = 2, 3, 5``) fits no base exactly, so the default is e.
    allow_touching : bool
        Whether two runs chosen by Fast-Block-Select may be adjacent. Default True, the
        paper's reading: its Figure 3 shows groups of 2 and 3 blocks becoming one group of
        5 at the next pass, which only happens when chosen runs may touch (checked on the
        paper's own Table 6). Adjacent runs merge into one longer run whose score is not
        the sum of theirs; the next pass then scores that merged group as one run. False
        keeps every chosen run separated by at least one kept block.
    max_iterations : int
        Fast-Block-Select passes at most; when reached, the plan is the last pass's choice,
        a RuntimeWarning is issued and the trace's summary says ``converged: False``.
    max_subsets : int
        ``exhaustive`` refuses models with more subsets than this.
    **moved
        ``loss``, ``verify``, ``portfolio``, ``refine``: moved to
        :func:`miprun.selection.verify.verify` and :func:`miprun.selection.sleb.sleb`, which
        measure plans; given here, a TypeError says where.

    Returns
    -------
    Plan
        ``removed`` (sorted), ``selector``, ``estimator`` (the table's, or None),
        ``evaluations`` (distinct run scores read), ``objective`` (additive damage, see the
        module docstring) and ``trace`` (a list of dicts; Fast-Block-Select records one
        ``{"kind": "iteration", ...}`` per pass and a final ``{"kind": "summary", ...}``).

    Notes
    -----
    Fast-Block-Select follows DESIGN.md section 4 (the paper's section 3.3): rank blocks by
    their single score ``r`` (ties: lower index first); ``P`` = the first ``num_remove``,
    ``A`` = the next ``min(N, T - N)``; for each group of contiguous blocks of ``P``, list
    the runs of its length made of ``P u A`` blocks, estimate each by the sum of its ``r``
    (ties: lower start first), score the best ``K`` for real; pick one run per group, no two
    overlapping or touching, with the largest sum of real scores, exactly; repeat until
    ``P`` does not change. The group's own run is always a candidate (scored even when not
    among the ``K``), so keeping ``P`` is always possible, and ``P`` changes only for a
    strictly larger sum. Its ``evaluations`` count the ``T`` single-block scores plus every
    distinct longer run scored (summary keys ``single_evaluations`` and
    ``run_evaluations``), to set against the brute-force count of every run up to length
    ``N`` (150 for T=32, N=5).

    Raises
    ------
    ValueError
        Unknown selector or scale; ``num_remove`` out of range; a table that does not hold
        the runs the selector needs, or was scored with the wrong estimator.
    ImportError
        When the native core ``miprun._core`` is not built.
    """
    if moved:
        names = sorted(moved)
        unknown = [n for n in names if n not in _MOVED]
        if unknown:
            raise TypeError(f"select() got unexpected keyword arguments {unknown}")
        raise TypeError(f"select() chooses from the scores alone; {', '.join(names)} moved to the measured searches: "
                        f"miprun.verify(table, num_remove, measurer, ...) and miprun.sleb(measurer, num_blocks, "
                        f"num_remove), with a miprun.Measurer (or a loss callable)")
    if selector == "sleb":
        raise ValueError("selector 'sleb' measures plans instead of reading scores: use "
                         "miprun.sleb(measurer, num_blocks, num_remove)")
    if selector not in TABLE_SELECTORS:
        raise ValueError(f"selector={selector!r} is unknown; choose one of {TABLE_SELECTORS}")
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is unknown; choose one of {SCALES}")
    table = scores if isinstance(scores, ScoreTable) else None
    if table is None and not callable(scores):
        raise ValueError(f"scores must be a ScoreTable or a callable (start, length) -> float, "
                         f"got {type(scores).__name__}")
    total = _num_blocks(table, num_blocks)
    num_remove = check_num_remove(num_remove, total)
    if table is None:
        return _select_callable(scores, num_remove, total, selector, log_base, allow_touching,
                                max_iterations, max_subsets)
    return select_table(table, num_remove, selector, scale=scale, log_base=log_base, allow_touching=allow_touching,
                        max_iterations=max_iterations, max_subsets=max_subsets)


def select_table(table: ScoreTable, num_remove: int, selector: str, *, scale: str, log_base: float,
                  allow_touching: bool, max_iterations: int, max_subsets: int) -> Plan:
    if selector == "fast_block_select":
        return _fast_block_select(table, num_remove, scale, log_base, allow_touching, max_iterations)
    if selector in ("optimal", "exhaustive"):
        return _exact(table.normalised(), num_remove, selector, max_subsets, table.estimator)
    if selector == "greedy":
        # raw MI keeps the order among negative estimates, which normalising clips to 0
        return _greedy(oriented(table, "raw")[:, 0], num_remove, table, "greedy")
    if selector == "shortgpt":
        _require_estimator(table, "shortgpt", "cosine", "Block Influence (1 - cos)")
        return _greedy(table.normalised()[:, 0], num_remove, table, "shortgpt")
    _require_estimator(table, "gromov", "angular", "angular distance")
    return _gromov(table, num_remove)


def damage(removed, normalised: np.ndarray) -> float | None:
    """Additive damage of a plan: sum over its maximal runs of ``1 - score(run)``.

    Parameters
    ----------
    removed : iterable of int
        Blocks to remove.
    normalised : ndarray, shape (num_blocks, max_run)
        Normalised scores in ``[0, 1]`` (``ScoreTable.normalised()``).

    Returns
    -------
    float or None
        The damage (0: every run is an identity), or None when the table does not hold one
        of the plan's runs (longer than ``max_run``, or NaN).
    """
    total = 0.0
    for start, length in runs_of(removed):
        if length > normalised.shape[1]:
            return None
        v = float(normalised[start, length - 1])
        if math.isnan(v):
            return None
        total += 1.0 - v
    return total


def _num_blocks(table: ScoreTable | None, num_blocks: int | None) -> int:
    if table is None:
        if num_blocks is None:
            raise ValueError("num_blocks is required when scores is a callable; "
                             "pass the model's number of blocks")
        if int(num_blocks) < 2:
            raise ValueError(f"num_blocks={num_blocks} must be >= 2 to remove any block")
        return int(num_blocks)
    if num_blocks is not None and int(num_blocks) != table.num_blocks:
        raise ValueError(f"num_blocks={num_blocks} but the score table has {table.num_blocks} blocks")
    return table.num_blocks


def check_num_remove(num_remove, total: int) -> int:
    try:
        count = operator.index(num_remove)  # int or numpy integer, not 2.0 or True
    except TypeError:
        count = None
    if count is None or isinstance(num_remove, bool) or not 1 <= count < total:
        raise ValueError(f"num_remove={num_remove} but the model has {total} blocks; "
                         f"remove a whole number of blocks between 1 and {total - 1}")
    return count


def _require_estimator(table: ScoreTable, selector: str, estimator: str, what: str) -> None:
    if table.estimator != estimator:
        raise ValueError(f"selector {selector!r} ranks by {what}: score the model with "
                         f"estimator={estimator!r} (this table was scored with {table.estimator!r})")


def oriented(table: ScoreTable, scale: str) -> np.ndarray:
    if scale == "raw" and table.estimator in MI_ESTIMATORS:
        return np.ascontiguousarray(table.values)
    if table.estimator not in MI_ESTIMATORS + DISTANCE_ESTIMATORS:
        raise ValueError(f"unknown estimator {table.estimator!r} in the score table")
    return np.ascontiguousarray(table.normalised())


def _fast_block_select(table: ScoreTable, num_remove: int, scale: str, log_base: float,
                       allow_touching: bool, max_iterations: int) -> Plan:
    used_scale = scale if table.estimator in MI_ESTIMATORS else "normalised"
    result = core().fast_block_select(oriented(table, scale), num_remove, log_base=log_base,
                                      allow_touching=allow_touching, max_iterations=max_iterations)
    settings = {"scale": used_scale, "log_base": log_base, "allow_touching": allow_touching}
    return _fbs_plan(result, table.num_blocks, settings, table.normalised(), table.estimator)


def _fbs_plan(result, total: int, settings: dict, normalised: np.ndarray | None,
              estimator: str | None) -> Plan:
    if not result.converged:
        warnings.warn(f"Fast-Block-Select did not converge in {result.iterations} iterations; "
                      f"the plan is the last iteration's choice (raise max_iterations)",
                      RuntimeWarning, stacklevel=3)
    trace = [_iteration_dict(i, it) for i, it in enumerate(result.trace, start=1)]
    trace.append({"kind": "summary", "converged": bool(result.converged),
                  "iterations": int(result.iterations),
                  "single_evaluations": int(result.single_evaluations),
                  "run_evaluations": int(result.evaluations), **settings})
    removed = list(result.removed)
    return Plan(removed=removed, num_blocks=total, selector="fast_block_select",
                evaluations=int(result.single_evaluations + result.evaluations),
                objective=None if normalised is None else damage(removed, normalised),
                trace=trace, estimator=estimator)


def _iteration_dict(number: int, it) -> dict:
    groups = [{"start": g.start, "length": g.length, "listed": g.listed, "k": g.k,
               "candidates": [{"start": c.start, "estimated": c.estimated, "actual": c.actual}
                              for c in g.candidates],
               "chosen_start": g.chosen_start} for g in it.groups]
    return {"kind": "iteration", "iteration": number, "pruning_set": list(it.pruning_set),
            "groups": groups, "current_sum": it.current_sum, "chosen_sum": it.chosen_sum,
            "new_pruning_set": list(it.new_pruning_set)}


def _exact(normalised: np.ndarray, num_remove: int, selector: str, max_subsets: int,
           estimator: str | None) -> Plan:
    # Runs longer than num_remove can never be removed, so they are not read.
    scores = np.ascontiguousarray(normalised[:, :num_remove])
    if selector == "optimal":
        removed, objective = core().optimal(scores, num_remove)
        trace = [{"kind": "summary", "damage": objective}]
    else:
        removed, objective, subsets = core().exhaustive(scores, num_remove, max_subsets=float(max_subsets))
        trace = [{"kind": "summary", "damage": objective, "subsets": int(subsets)}]
    return Plan(removed=list(removed), num_blocks=scores.shape[0], selector=selector,
                evaluations=int(np.count_nonzero(~np.isnan(scores))), objective=float(objective),
                trace=trace, estimator=estimator)


def _greedy(single: np.ndarray, num_remove: int, table: ScoreTable | None, selector: str) -> Plan:
    removed = list(core().greedy(np.ascontiguousarray(single, dtype=np.float64), num_remove))
    objective = None if table is None else damage(removed, table.normalised())
    return Plan(removed=removed, num_blocks=len(single), selector=selector, evaluations=len(single),
                objective=objective, trace=[], estimator=None if table is None else table.estimator)


def _gromov(table: ScoreTable, num_remove: int) -> Plan:
    if table.max_run < num_remove:
        raise ValueError(f"selector 'gromov' needs runs of {num_remove} blocks but the table holds "
                         f"runs up to length {table.max_run}; score with max_run >= {num_remove}")
    starts = table.num_blocks - num_remove + 1
    column = table.normalised()[:starts, num_remove - 1]  # run (s, num_remove) for every s
    if np.isnan(column).any():
        raise ValueError(f"the score table holds NaN for runs of length {num_remove}; rescore the table")
    start = int(np.argmax(column))  # first maximum: ties go to the lower start
    removed = list(range(start, start + num_remove))
    return Plan(removed=removed, num_blocks=table.num_blocks, selector="gromov", evaluations=starts,
                objective=damage(removed, table.normalised()),
                trace=[{"kind": "summary", "start": start, "score": float(column[start])}],
                estimator=table.estimator)


def _select_callable(score: RunScore, num_remove: int, total: int, selector: str, log_base: float,
                     allow_touching: bool, max_iterations: int, max_subsets: int) -> Plan:
    def run_score(start: int, length: int) -> float:
        return float(score(start, length))

    if selector == "fast_block_select":
        result = core().fast_block_select_callback(total, run_score, num_remove, log_base=log_base,
                                                   allow_touching=allow_touching,
                                                   max_iterations=max_iterations)
        settings = {"scale": "as given", "log_base": log_base, "allow_touching": allow_touching}
        return _fbs_plan(result, total, settings, None, None)
    if selector == "greedy":
        return _greedy(np.array([run_score(b, 1) for b in range(total)]), num_remove, None, "greedy")
    if selector in ("optimal", "exhaustive"):
        values = np.full((total, num_remove), np.nan)
        for start in range(total):
            for length in range(1, min(num_remove, total - start) + 1):
                values[start, length - 1] = run_score(start, length)
        return _exact(values, num_remove, selector, max_subsets, None)
    needs = "cosine" if selector == "shortgpt" else "angular"
    raise ValueError(f"selector {selector!r} needs a ScoreTable scored with estimator={needs!r}, "
                     f"not a callable")
