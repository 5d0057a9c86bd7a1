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
``sleb``
    SLEB's search (Song et al., 2024): remove one block at a time, the one whose removal
    gives the lowest measured calibration loss; needs ``loss`` (no table).

With ``verify=K``, any selector but ``sleb`` proposes its K best plans under its own
objective and (``portfolio=True``) the plans of the other cheap selectors on the same
table, plus the ShortGPT and Gromov plans on the table's companion ``cosine`` and
``angular`` tables and the Fast-Block-Select and ``optimal`` plans on its companion pooled
``gaussian`` table, when the scoring pass produced them (:data:`BASELINE_PORTFOLIO`,
:data:`GAUSSIAN_PORTFOLIO`, :func:`companion_runs`); each is measured with ``loss`` and
the lowest measured loss wins (see :func:`select`).

Every plan's ``objective`` is the additive damage of its runs, read from the table's
normalised scores (None where the table does not hold all its runs, or for run scores given
by a callable), so any selector can be compared with ``optimal``. ``evaluations`` is the
number of distinct run scores the selector read.
"""

from __future__ import annotations

import math
import operator
import time
import warnings
from typing import Callable, Union

import numpy as np

from miprun._native import core
from miprun.selection.kbest import kbest_column, kbest_fbs, kbest_single
from miprun.selection.plan import Plan, runs_of
from miprun.selection.refine import refine
from miprun.selection.sleb import Loss, sleb
from miprun.scoring.table import DISTANCE_ESTIMATORS, MI_ESTIMATORS, ScoreTable

SELECTORS = ("fast_block_select", "optimal", "exhaustive", "greedy", "shortgpt", "gromov", "sleb")
#: Selectors whose plans ``verify`` adds to a selector's own K best (``portfolio=True``): the
#: cheap ones that read any table, so one scoring pass serves them all.
PORTFOLIO = ("fast_block_select", "optimal", "greedy")
#: The baselines ``verify`` also adds (``portfolio=True``), each read from the table's
#: companion table of its own distance (selector -> estimator), scored in the same pass
#: (see :func:`companion_runs`); skipped, with the reason, when the table carries none.
BASELINE_PORTFOLIO = {"shortgpt": "cosine", "gromov": "angular"}
#: MI selectors ``verify`` also runs on the companion pooled Gaussian MI table
#: (``portfolio=True``): on Gemma-3 the Gaussian scores rank single blocks best, and their
#: plans are candidates no hist-table selector proposes (benchmarks/RESULTS.md).
GAUSSIAN_PORTFOLIO = ("fast_block_select", "optimal")
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
    loss: Loss | None = None,
    verify: int = 0,
    portfolio: bool = True,
    refine: int = 0,
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
        One of :data:`SELECTORS`.
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
    loss : callable, optional
        ``loss(removed) -> float``: the calibration loss (mean next-token cross-entropy)
        of the model with the blocks ``removed`` (a sorted tuple) bypassed;
        :class:`miprun.evaluate.calibration_loss.CalibrationLoss` is one. Required by
        ``sleb`` (then ``scores`` may be None, with ``num_blocks``) and by ``verify``.
    verify : int
        0: off. ``K >= 1``: build candidate plans, the ``K`` best under the selector's own
        objective (``optimal``/``exhaustive``: exact K-best dynamic programme of the
        additive damage; ``greedy``/``shortgpt``: the K subsets with the largest summed
        single scores; ``gromov``: the K best single runs; ``fast_block_select``: the K
        best one-run-per-group choices among the runs its final pass scored, by their
        summed actual scores, its own plan first), plus with ``portfolio`` the plans of
        :data:`PORTFOLIO` on the same table, of :data:`BASELINE_PORTFOLIO`
        (``shortgpt``, ``gromov``) on the table's companion ``cosine`` / ``angular``
        tables and of :data:`GAUSSIAN_PORTFOLIO` on its companion ``gaussian`` table
        (source ``name@gaussian``), where it carries them (scored in the same pass, see
        :func:`companion_runs`); measure each distinct plan once with ``loss`` and keep
        the lowest (ties: the earlier candidate, the selector's own plan first). Needs a
        ScoreTable. Every candidate (``source``: the selector that proposed it; ``sources``:
        every proposer, ``name#rank``), its loss and the skipped portfolio members with the
        reason are in the trace entry ``{"kind": "verify", ...}``.
    portfolio : bool
        With ``verify``: add the other cheap selectors' plans and the baselines' plans
        from the companion tables (default True).
    refine : int
        With ``verify``: after the best candidate is chosen, up to ``refine`` rounds of
        measured one-block swaps along its runs (:func:`miprun.selection.refine.refine`);
        the refined plan joins the candidates (source ``refine``) when it measures better,
        and the trace entry's ``refine`` records every swap measured. 0: off (default).

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
    if selector not in SELECTORS:
        raise ValueError(f"selector={selector!r} is unknown; choose one of {SELECTORS}")
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is unknown; choose one of {SCALES}")
    if isinstance(verify, bool) or not isinstance(verify, int) or verify < 0:
        raise ValueError(f"verify must be an int >= 0 (0: off), got {verify!r}")
    if not isinstance(portfolio, bool):
        raise ValueError(f"portfolio must be True or False, got {portfolio!r}")
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be an int >= 0 (0: off), got {refine!r}")
    if refine and not verify:
        raise ValueError(f"refine={refine} improves the plan verify chose by measured swaps: it needs verify >= 1")
    if (selector == "sleb" or verify) and not callable(loss):
        what = "selector 'sleb'" if selector == "sleb" else f"verify={verify}"
        raise ValueError(f"{what} measures plans by their calibration loss: pass loss=callable(removed) -> float "
                         f"(miprun.prune builds it from the model in memory)")
    table = scores if isinstance(scores, ScoreTable) else None
    if selector == "sleb":
        if verify:
            raise ValueError("selector 'sleb' measures every step already: verify does not apply to it")
        if table is None and scores is not None:
            raise ValueError(f"selector 'sleb' reads no run scores: give a ScoreTable (for the plan's objective) "
                             f"or None with num_blocks, got {type(scores).__name__}")
        total = _num_blocks(table, num_blocks)
        plan = sleb(loss, total, _check_num_remove(num_remove, total))
        if table is not None:
            plan.objective = damage(plan.removed, table.normalised())
            plan.estimator = table.estimator
        return plan
    if table is None and not callable(scores):
        raise ValueError(f"scores must be a ScoreTable or a callable (start, length) -> float, "
                         f"got {type(scores).__name__}")
    if verify and table is None:
        raise ValueError("verify compares plans of a score table: give a ScoreTable, not a callable")
    total = _num_blocks(table, num_blocks)
    num_remove = _check_num_remove(num_remove, total)
    settings = {"scale": scale, "log_base": log_base, "allow_touching": allow_touching,
                "max_iterations": max_iterations, "max_subsets": max_subsets}
    if verify:
        return _verify(table, num_remove, selector, settings, loss, verify, portfolio, refine)

    if table is None:
        return _select_callable(scores, num_remove, total, selector, log_base, allow_touching,
                                max_iterations, max_subsets)
    return _select_table(table, num_remove, selector, **settings)


def companion_runs(num_remove: int) -> dict[str, int]:
    """The companion tables :data:`BASELINE_PORTFOLIO` reads to remove ``num_remove`` blocks.

    ``{"cosine": 1, "angular": num_remove, "gaussian": num_remove}``: ShortGPT ranks single
    blocks by ``1 - cos``, Gromov reads runs of ``num_remove`` blocks by angular distance,
    and :data:`GAUSSIAN_PORTFOLIO` reads pooled Gaussian MI of runs up to ``num_remove``.
    Pass it as ``companions=`` to :func:`miprun.scoring.score.score_blocks` (or
    ``score_tokens``) so that ``select(..., verify=K)`` measures those plans too.
    """
    return {"cosine": 1, "angular": int(num_remove), "gaussian": int(num_remove)}


def _select_table(table: ScoreTable, num_remove: int, selector: str, *, scale: str, log_base: float,
                  allow_touching: bool, max_iterations: int, max_subsets: int) -> Plan:
    if selector == "fast_block_select":
        return _fast_block_select(table, num_remove, scale, log_base, allow_touching, max_iterations)
    if selector in ("optimal", "exhaustive"):
        return _exact(table.normalised(), num_remove, selector, max_subsets, table.estimator)
    if selector == "greedy":
        # raw MI keeps the order among negative estimates, which normalising clips to 0
        return _greedy(_oriented(table, "raw")[:, 0], num_remove, table, "greedy")
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


def _check_num_remove(num_remove, total: int) -> int:
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


def _oriented(table: ScoreTable, scale: str) -> np.ndarray:
    if scale == "raw" and table.estimator in MI_ESTIMATORS:
        return np.ascontiguousarray(table.values)
    if table.estimator not in MI_ESTIMATORS + DISTANCE_ESTIMATORS:
        raise ValueError(f"unknown estimator {table.estimator!r} in the score table")
    return np.ascontiguousarray(table.normalised())


def _fast_block_select(table: ScoreTable, num_remove: int, scale: str, log_base: float,
                       allow_touching: bool, max_iterations: int) -> Plan:
    used_scale = scale if table.estimator in MI_ESTIMATORS else "normalised"
    result = core().fast_block_select(_oriented(table, scale), num_remove, log_base=log_base,
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


def _own_kbest(plan: Plan, table: ScoreTable, num_remove: int, k: int, allow_touching: bool
               ) -> list[tuple[list[int], float | None]]:
    """The selector's K best plans under its own objective, its own plan first: (removed, objective value)."""
    selector = plan.selector
    if selector in ("optimal", "exhaustive"):
        scores = np.ascontiguousarray(table.normalised()[:, :num_remove])
        found = [(list(r), float(d)) for r, d in core().optimal_kbest(scores, num_remove, k)]
    elif selector in ("greedy", "shortgpt"):
        single = _oriented(table, "raw")[:, 0] if selector == "greedy" else table.normalised()[:, 0]
        found = kbest_single(single, num_remove, k)
    elif selector == "gromov":
        starts = table.num_blocks - num_remove + 1
        found = kbest_column(table.normalised()[:starts, num_remove - 1], num_remove, k)
    else:  # fast_block_select: its final pass's candidates
        last = [t for t in plan.trace if t.get("kind") == "iteration"][-1]
        found = kbest_fbs(last["groups"], plan.removed, last["chosen_sum"], k, allow_touching=allow_touching)
    own = (list(plan.removed), found[0][1] if found and found[0][0] == plan.removed else plan.objective)
    return ([own] + [f for f in found if f[0] != plan.removed])[:k]


def _verify(table: ScoreTable, num_remove: int, selector: str, settings: dict, loss: Loss, k: int,
            portfolio: bool, rounds: int = 0) -> Plan:
    """Measure the candidate plans (see :func:`select`, ``verify``) and keep the one of least loss."""
    t = time.perf_counter()
    own = _select_table(table, num_remove, selector, **settings)
    normalised = table.normalised()
    candidates: list[dict] = []
    for rank, (removed, value) in enumerate(_own_kbest(own, table, num_remove, k, settings["allow_touching"])):
        candidates.append({"source": selector, "rank": rank, "removed": removed, "selector_objective": value})
    members = [name for name in PORTFOLIO if name != selector] if portfolio else []
    skipped = []
    for name, estimator in BASELINE_PORTFOLIO.items() if portfolio else ():
        if name == selector:
            continue
        if estimator in table.companions:  # read from the companion table of the baseline's own distance
            members.append(name)
        else:
            skipped.append({"source": name, "reason": f"the score table carries no {estimator!r} companion table "
                                                      f"(score with companions=companion_runs(num_remove))"})
    runs = [(name, table.companions[BASELINE_PORTFOLIO[name]] if name in BASELINE_PORTFOLIO else table, name)
            for name in members]
    if portfolio and "gaussian" in table.companions:
        runs += [(name, table.companions["gaussian"], f"{name}@gaussian") for name in GAUSSIAN_PORTFOLIO]
    elif portfolio:
        skipped += [{"source": f"{name}@gaussian", "reason": "the score table carries no 'gaussian' companion table "
                                                             "(score with companions=companion_runs(num_remove))"}
                    for name in GAUSSIAN_PORTFOLIO]
    for name, source, label in runs:
        try:
            other = _select_table(source, num_remove, name, **settings)
        except ValueError as exc:  # e.g. the table does not hold the runs this selector needs
            skipped.append({"source": label, "reason": str(exc)})
            continue
        candidates.append({"source": label, "rank": 0, "removed": list(other.removed),
                           "selector_objective": other.objective})
    distinct: dict[tuple[int, ...], dict] = {}
    for c in candidates:
        key = tuple(c["removed"])
        if key in distinct:
            distinct[key]["sources"].append(f"{c['source']}#{c['rank']}")
            continue
        c["sources"] = [f"{c['source']}#{c['rank']}"]
        c["damage"] = damage(c["removed"], normalised)
        c["loss"] = float(loss(key))
        distinct[key] = c
    measured = list(distinct.values())
    best = min(range(len(measured)), key=lambda i: (math.isnan(measured[i]["loss"]), measured[i]["loss"], i))
    passes = len(measured)
    refined = None
    if rounds:
        removed, refined = refine(measured[best]["removed"], loss, table.num_blocks, rounds,
                                  known={tuple(c["removed"]): c["loss"] for c in measured})
        passes += refined["forward_passes"]
        if tuple(removed) not in distinct:  # a swap measured better than every candidate
            measured.append({"source": "refine", "rank": 0, "removed": removed, "selector_objective": None,
                             "sources": ["refine#0"], "damage": damage(removed, normalised),
                             "loss": refined["loss"]})
            best = len(measured) - 1
    chosen = measured[best]
    entry = {"kind": "verify", "k": k, "portfolio": [label for _, _, label in runs], "skipped": skipped,
             "candidates": measured, "chosen": best, "chosen_sources": chosen["sources"],
             "selector_plan": list(own.removed), "selector_plan_loss": measured[0]["loss"], "loss": chosen["loss"],
             "forward_passes": passes, "seconds": time.perf_counter() - t}
    if refined is not None:
        entry["refine"] = refined
    return Plan(removed=chosen["removed"], num_blocks=table.num_blocks, selector=selector,
                evaluations=own.evaluations, objective=damage(chosen["removed"], normalised),
                trace=list(own.trace) + [entry], estimator=table.estimator)
