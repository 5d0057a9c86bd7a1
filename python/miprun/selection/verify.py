"""Measured selection: the selector's K best plans and the other selectors' plans, measured; the best kept.

The scores propose, the measurement decides. :func:`verify` builds the candidates — the K best
plans under the selector's own objective (:func:`own_kbest`) and, with ``portfolio``, the plans
of the other cheap selectors on the same table and of the baselines and Gaussian MI selectors
on the companion tables the same scoring pass produced — measures them all in one batch (one
sweep of the measurer), keeps the best, and refines it by measured swaps
(:mod:`miprun.selection.refine`). With screening, every candidate is first measured on a few
windows and only the best ``confirm`` are measured on all of them.
"""

from __future__ import annotations

import time

import numpy as np

from miprun._native import core
from miprun.selection.kbest import kbest_column, kbest_fbs, kbest_single
from miprun.selection.measured import Measured
from miprun.selection.plan import Plan
from miprun.selection.refine import refine
from miprun.selection.select import (SCALES, TABLE_SELECTORS, check_num_remove, damage, oriented, select_table)
from miprun.scoring.table import ScoreTable

__all__ = ["verify", "own_kbest", "candidates", "companion_runs", "PORTFOLIO", "BASELINE_PORTFOLIO",
           "GAUSSIAN_PORTFOLIO"]

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


def companion_runs(num_remove: int) -> dict[str, int]:
    """The companion tables the portfolio reads to remove ``num_remove`` blocks.

    ``{"cosine": 1, "angular": num_remove, "gaussian": num_remove}``: ShortGPT ranks single
    blocks by ``1 - cos``, Gromov reads runs of ``num_remove`` blocks by angular distance,
    and :data:`GAUSSIAN_PORTFOLIO` reads pooled Gaussian MI of runs up to ``num_remove``.
    Pass it as ``companions=`` to :func:`miprun.scoring.score.score_blocks` (or
    ``score_tokens``) so that :func:`verify` measures those plans too.
    """
    return {"cosine": 1, "angular": int(num_remove), "gaussian": int(num_remove)}


def verify(table: ScoreTable, num_remove: int, measure, *, selector: str = "fast_block_select", k: int = 2,
           portfolio: bool = True, refine_rounds: int = 0, criterion: str = "kl", screen: bool = False,
           confirm: int = 3, **settings) -> Plan:
    """Choose ``num_remove`` blocks by measuring candidate plans of ``table``.

    Parameters
    ----------
    table : ScoreTable
        The selector's table; its companion tables feed the portfolio.
    num_remove : int
    measure : Measurer, callable or Measured
        A :class:`miprun.measure.Measurer` (plans measured in batches, on held-back
        windows), a ``loss(removed) -> float`` callable, or a :class:`Measured` shared with
        other searches (then ``criterion`` is its own).
    selector : str
        One of :data:`~miprun.selection.select.TABLE_SELECTORS`: whose K best plans lead.
    k : int
        The selector's K best plans under its own objective (``optimal``/``exhaustive``:
        exact K-best dynamic programme of the additive damage; ``greedy``/``shortgpt``: the
        K subsets with the largest summed single scores; ``gromov``: the K best single runs;
        ``fast_block_select``: the K best one-run-per-group choices among the runs its
        final pass scored, its own plan first).
    portfolio : bool
        Add the plans of :data:`PORTFOLIO` on the table, of :data:`BASELINE_PORTFOLIO` on
        its ``cosine`` / ``angular`` companions and of :data:`GAUSSIAN_PORTFOLIO` on its
        ``gaussian`` companion (source ``name@gaussian``), where it carries them.
    refine_rounds : int
        Rounds of measured one-block swaps from the chosen plan (0: off).
    criterion : {"kl", "loss"}
        What a measurer's measurements are ranked by.
    screen : bool
        Measure every candidate on the measurer's screening windows first and only the best
        ``confirm`` on all windows (refinement screens its growths and put-backs the same way).
    confirm : int
        Candidates measured on all windows after screening.
    **settings
        ``scale``, ``log_base``, ``allow_touching``, ``max_iterations``, ``max_subsets``, as
        :func:`miprun.select`.

    Returns
    -------
    Plan
        The selector's name, its own plan's evaluations, the chosen plan's damage, and the
        selector's trace with a ``{"kind": "verify", ...}`` entry: every candidate with its
        sources, its measured values (``screened`` on the screening windows, ``value`` on
        all, where measured), the chosen one, and the refinement's ``refine`` trace.
    """
    measured = measure if isinstance(measure, Measured) else Measured(measure, criterion=criterion)
    _check(table, selector, k, portfolio, refine_rounds, confirm, settings)
    num_remove = check_num_remove(num_remove, table.num_blocks)
    t = time.perf_counter()
    own = select_table(table, num_remove, selector, **_settings(settings))
    found, skipped, labels = candidates(table, num_remove, own, k, portfolio, settings)
    chosen = _measure_candidates(found, measured, screen, confirm)
    entry = {"kind": "verify", "k": k, "portfolio": labels, "skipped": skipped, "criterion": measured.criterion,
             "screen": screen and measured.can_screen, "candidates": found, "chosen": chosen,
             "selector_plan": list(own.removed)}
    if refine_rounds:
        removed, trace = refine(found[chosen]["removed"], measured, table.num_blocks, refine_rounds,
                                screen=screen)
        entry["refine"] = trace
        if tuple(removed) not in {tuple(c["removed"]) for c in found}:  # a swap measured better than them all
            found.append({"source": "refine", "rank": 0, "removed": removed, "selector_objective": None,
                          "sources": ["refine#0"], "damage": damage(removed, table.normalised()),
                          "value": trace["value"], **measured.detail(removed)})
            entry["chosen"] = len(found) - 1
    best = found[entry["chosen"]]
    entry.update({"chosen_sources": best["sources"], "value": best["value"], "measured": measured.summary(),
                  "seconds": time.perf_counter() - t})
    return Plan(removed=best["removed"], num_blocks=table.num_blocks, selector=selector,
                evaluations=own.evaluations, objective=damage(best["removed"], table.normalised()),
                trace=list(own.trace) + [entry], estimator=table.estimator)


def _settings(settings: dict) -> dict:
    defaults = {"scale": "raw", "log_base": float(np.e), "allow_touching": True, "max_iterations": 100,
                "max_subsets": 50_000_000}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise TypeError(f"verify() got unexpected keyword arguments {unknown}")
    return {**defaults, **settings}


def _check(table, selector: str, k, portfolio, refine_rounds, confirm, settings: dict) -> None:
    if not isinstance(table, ScoreTable):
        raise ValueError(f"verify compares plans of a score table: give a ScoreTable, got {type(table).__name__}")
    if selector not in TABLE_SELECTORS:
        raise ValueError(f"verify builds on a table selector, one of {TABLE_SELECTORS}; got {selector!r} (sleb "
                         f"measures every step already)")
    if settings.get("scale", "raw") not in SCALES:
        raise ValueError(f"scale={settings['scale']!r} is unknown; choose one of {SCALES}")
    for name, value, low in (("k", k, 1), ("refine_rounds", refine_rounds, 0), ("confirm", confirm, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not isinstance(portfolio, bool):
        raise ValueError(f"portfolio must be True or False, got {portfolio!r}")


def _measure_candidates(found: list[dict], measured: Measured, screen: bool, confirm: int) -> int:
    """Measure the candidates (screened first when asked) and return the index of the best (ties: the earlier)."""
    plans = [c["removed"] for c in found]
    shortlist = list(range(len(found)))
    if screen and measured.can_screen and len(found) > confirm:
        for c, value in zip(found, measured(plans, screen=True)):
            c["screened"] = value
        shortlist = sorted(shortlist, key=lambda i: (found[i]["screened"], i))[:confirm]
    for i, value in zip(shortlist, measured([plans[i] for i in shortlist])):
        found[i].update(value=value, **measured.detail(plans[i]))
    return min(shortlist, key=lambda i: (found[i]["value"], i))


def candidates(table: ScoreTable, num_remove: int, own: Plan, k: int, portfolio: bool,
               settings: dict) -> tuple[list[dict], list[dict], list[str]]:
    """The distinct candidate plans (the selector's K best first), the portfolio members skipped, their labels.

    Each candidate: ``source`` and ``rank`` of its first proposer, ``sources`` (every
    proposer, ``name#rank``), ``removed``, ``selector_objective`` and ``damage``.
    """
    settings = _settings(settings)
    proposed = [{"source": own.selector, "rank": rank, "removed": removed, "selector_objective": value}
                for rank, (removed, value) in enumerate(own_kbest(own, table, num_remove, k,
                                                                 settings["allow_touching"]))]
    runs, skipped = _portfolio(table, own.selector) if portfolio else ([], [])
    for name, source, label in runs:
        try:
            other = select_table(source, num_remove, name, **settings)
        except ValueError as exc:  # e.g. the table does not hold the runs this selector needs
            skipped.append({"source": label, "reason": str(exc)})
            continue
        proposed.append({"source": label, "rank": 0, "removed": list(other.removed),
                         "selector_objective": other.objective})
    distinct: dict[tuple[int, ...], dict] = {}
    for c in proposed:
        tag = f"{c['source']}#{c['rank']}"
        if tuple(c["removed"]) in distinct:
            distinct[tuple(c["removed"])]["sources"].append(tag)
        else:
            distinct[tuple(c["removed"])] = {**c, "sources": [tag],
                                             "damage": damage(c["removed"], table.normalised())}
    return list(distinct.values()), skipped, [label for _, _, label in runs]


def _portfolio(table: ScoreTable, selector: str) -> tuple[list[tuple[str, ScoreTable, str]], list[dict]]:
    """The portfolio's (selector, table it reads, label) triples, and the members skipped with the reason."""
    runs = [(name, table, name) for name in PORTFOLIO if name != selector]
    skipped = []
    hint = "(score with companions=companion_runs(num_remove))"
    for name, estimator in BASELINE_PORTFOLIO.items():
        if name == selector:
            continue
        if estimator in table.companions:
            runs.append((name, table.companions[estimator], name))
        else:
            skipped.append({"source": name, "reason": f"the score table carries no {estimator!r} companion table "
                                                      f"{hint}"})
    for name in GAUSSIAN_PORTFOLIO:
        if "gaussian" in table.companions:
            runs.append((name, table.companions["gaussian"], f"{name}@gaussian"))
        else:
            skipped.append({"source": f"{name}@gaussian",
                            "reason": f"the score table carries no 'gaussian' companion table {hint}"})
    return runs, skipped


def own_kbest(plan: Plan, table: ScoreTable, num_remove: int, k: int, allow_touching: bool
              ) -> list[tuple[list[int], float | None]]:
    """The selector's K best plans under its own objective, its own plan first: (removed, objective value)."""
    selector = plan.selector
    if selector in ("optimal", "exhaustive"):
        scores = np.ascontiguousarray(table.normalised()[:, :num_remove])
        found = [(list(r), float(d)) for r, d in core().optimal_kbest(scores, num_remove, k)]
    elif selector in ("greedy", "shortgpt"):
        single = oriented(table, "raw")[:, 0] if selector == "greedy" else table.normalised()[:, 0]
        found = kbest_single(single, num_remove, k)
    elif selector == "gromov":
        starts = table.num_blocks - num_remove + 1
        found = kbest_column(table.normalised()[:starts, num_remove - 1], num_remove, k)
    else:  # fast_block_select: its final pass's candidates
        last = [t for t in plan.trace if t.get("kind") == "iteration"][-1]
        found = kbest_fbs(last["groups"], plan.removed, last["chosen_sum"], k, allow_touching=allow_touching)
    own = (list(plan.removed), found[0][1] if found and found[0][0] == plan.removed else plan.objective)
    return ([own] + [f for f in found if f[0] != plan.removed])[:k]
