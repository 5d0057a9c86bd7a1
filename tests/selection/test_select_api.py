"""miprun.selection.select.select: every selector through the public API, its plans and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from select_reference import all_damages, damage_ref, random_table
from support import requires_native

from miprun.selection.plan import Plan
from miprun.selection.sleb import sleb
from miprun.selection.select import SELECTORS, damage, select
from miprun.scoring.table import ScoreTable, information_coefficient

pytestmark = requires_native


def mi_table(num_blocks, max_run, seed, estimator="hist"):
    """Raw MI in nats (0 to ~2), so that the raw and normalised scales differ."""
    values = -0.5 * np.log1p(-random_table(num_blocks, max_run, seed, "dpi") ** 2 * 0.98)
    return ScoreTable(values=values, estimator=estimator)


def distance_table(num_blocks, max_run, seed, estimator):
    top = 2.0 if estimator == "cosine" else 1.0
    return ScoreTable(values=top * random_table(num_blocks, max_run, seed), estimator=estimator)


def table_for(selector, num_blocks, max_run, seed):
    if selector == "shortgpt":
        return distance_table(num_blocks, max_run, seed, "cosine")
    if selector == "gromov":
        return distance_table(num_blocks, max_run, seed, "angular")
    return mi_table(num_blocks, max_run, seed)


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 12), st.integers(0, 2**32 - 1), st.data())
def test_every_selector_returns_a_valid_plan(num_blocks, seed, data):
    num_remove = data.draw(st.integers(1, num_blocks - 1))
    max_run = data.draw(st.integers(num_remove, num_blocks))
    for selector in SELECTORS:
        table = table_for(selector, num_blocks, max_run, seed)
        # The exact optimum of the same objective on the same table, checked against every subset.
        optimum = select(table, num_remove, selector="optimal").objective
        assert optimum == pytest.approx(min(all_damages(table.normalised(), num_remove).values()), abs=1e-12)
        if selector == "sleb":  # sleb measures plans: a stand-in loss (any callable of the removed blocks) drives it
            plan = sleb(lambda removed: float(sum(removed)), num_blocks, num_remove)
            assert plan.removed == list(range(num_remove))  # the additive loss's optimum, one block at a time
            continue
        plan = select(table, num_remove, selector=selector)
        assert isinstance(plan, Plan) and plan.selector == selector
        assert plan.estimator == table.estimator
        assert len(plan.removed) == num_remove == len(set(plan.removed))
        assert all(0 <= b < num_blocks for b in plan.removed)
        assert plan.objective == pytest.approx(damage_ref(plan.removed, table.normalised()), abs=1e-12)
        assert plan.to_dict()["pruned_blocks"] == plan.removed
        # Damage is minimised: no selector beats the optimum; the exact ones reach it, and so
        # does every search over single blocks when one block is removed.
        assert plan.objective >= optimum - 1e-12, selector
        if selector in ("optimal", "exhaustive") or (num_remove == 1 and selector in ("fast_block_select",
                                                                                      "greedy")):
            assert plan.objective == pytest.approx(optimum, abs=1e-12), selector


@pytest.mark.parametrize("seed", range(4))
def test_greedy_is_top_singles(seed):
    table = mi_table(12, 4, seed)
    table.values[3, 0] = table.values[7, 0] = table.values[:, 0].max() + 0.1  # a tie: lower first
    for num_remove in range(1, 12):
        expected = sorted(np.argsort(-table.values[:, 0], kind="stable")[:num_remove].tolist())
        plan = select(table, num_remove, selector="greedy")
        assert plan.removed == expected
        assert plan.evaluations == 12


def test_greedy_keeps_the_order_of_negative_mi():
    # KSG can return small negative MI; normalising clips those to 0 and would tie them
    table = ScoreTable(values=np.array([[-0.02], [-0.01], [-0.03], [0.5]]), estimator="ksg")
    assert select(table, 2, selector="greedy").removed == [1, 3]


@pytest.mark.parametrize("seed", range(4))
def test_shortgpt_removes_least_block_influence(seed):
    table = distance_table(10, 3, seed, "cosine")
    plan = select(table, 3, selector="shortgpt")
    assert plan.removed == sorted(np.argsort(table.values[:, 0], kind="stable")[:3].tolist())


@pytest.mark.parametrize("seed", range(4))
def test_gromov_is_argmax_run(seed):
    table = distance_table(11, 5, seed, "angular")
    for num_remove in range(1, 6):
        distances = [table.values[s, num_remove - 1] for s in range(11 - num_remove + 1)]
        start = int(np.argmin(distances))
        plan = select(table, num_remove, selector="gromov")
        assert plan.removed == list(range(start, start + num_remove))
        assert plan.evaluations == len(distances)


def test_fast_block_select_scale():
    from miprun._native import core

    for seed in range(30):
        table = mi_table(12, 5, seed)
        raw = select(table, 5, scale="raw")
        normalised = select(table, 5, scale="normalised")
        assert raw.removed == core().fast_block_select(table.values, 5).removed
        assert normalised.removed == core().fast_block_select(
            information_coefficient(np.nan_to_num(table.values)), 5).removed
        assert raw.trace[-1]["scale"] == "raw" and normalised.trace[-1]["scale"] == "normalised"
    cosine = distance_table(12, 5, 1, "cosine")
    assert select(cosine, 4, scale="raw").removed == select(cosine, 4, scale="normalised").removed
    assert select(cosine, 4, scale="raw").trace[-1]["scale"] == "normalised"


def test_fast_block_select_trace_and_counts():
    table = mi_table(12, 5, 3)
    plan = select(table, 5)
    *iterations, summary = plan.trace
    assert summary["kind"] == "summary" and summary["converged"] is True
    assert summary["iterations"] == len(iterations) and iterations[0]["iteration"] == 1
    assert plan.evaluations == summary["single_evaluations"] + summary["run_evaluations"]
    assert summary["single_evaluations"] == 12
    scored = {(c["start"], g["length"]) for it in iterations for g in it["groups"] for c in g["candidates"]}
    assert summary["run_evaluations"] == sum(1 for _, n in scored if n > 1)
    assert iterations[-1]["new_pruning_set"] == plan.removed
    import json
    json.dumps(plan.to_dict())  # a report can hold it


@pytest.mark.parametrize("selector", ["fast_block_select", "greedy", "optimal", "exhaustive"])
def test_callable_equals_table(selector):
    table = mi_table(11, 4, 5)
    normalised = table.normalised()
    calls = []

    def score(start, length):
        calls.append((start, length))
        return np.float64(normalised[start, length - 1])

    expected = select(table, 4, selector=selector, scale="normalised")
    plan = select(score, 4, selector=selector, num_blocks=11)
    assert plan.removed == expected.removed
    assert len(calls) == len(set(calls)) == plan.evaluations
    if selector in ("optimal", "exhaustive"):
        assert plan.objective == pytest.approx(expected.objective, abs=1e-12)
    else:
        assert plan.objective is None


def test_max_iterations_warns():
    for seed in range(500):
        table = ScoreTable(values=random_table(12, 6, seed), estimator="hist")
        if select(table, 5, scale="normalised").trace[-1]["iterations"] >= 3:
            break
    with pytest.warns(RuntimeWarning, match="did not converge in 1 iterations"):
        plan = select(table, 5, scale="normalised", max_iterations=1)
    assert plan.trace[-1]["converged"] is False


def test_damage_helper():
    normalised = random_table(8, 2, 4)
    assert damage([0, 1, 5], normalised) == pytest.approx(2 - normalised[0, 1] - normalised[5, 0])
    assert damage([0, 1, 2], normalised) is None  # run of 3 not in the table


def test_errors():
    table = mi_table(8, 3, 1)
    with pytest.raises(ValueError, match="selector='best' is unknown"):
        select(table, 2, selector="best")
    with pytest.raises(ValueError, match="scale='log' is unknown"):
        select(table, 2, scale="log")
    assert select(table, np.int64(2)).removed == select(table, 2).removed
    for bad in (0, 8, -1, 2.5, 2.0, True, "2"):
        with pytest.raises(ValueError, match=f"num_remove={bad} but the model has 8 blocks"):
            select(table, bad)
    with pytest.raises(ValueError, match="num_blocks=9 but the score table has 8 blocks"):
        select(table, 2, num_blocks=9)
    with pytest.raises(ValueError, match="num_blocks is required"):
        select(lambda s, n: 0.5, 2)
    with pytest.raises(ValueError, match="ScoreTable or a callable"):
        select([[0.5]], 1)
    with pytest.raises(ValueError, match=r"'shortgpt' ranks by Block Influence.*estimator='cosine'.*'hist'"):
        select(table, 2, selector="shortgpt")
    with pytest.raises(ValueError, match=r"'gromov' ranks by angular distance.*estimator='angular'"):
        select(distance_table(8, 3, 1, "cosine"), 2, selector="gromov")
    with pytest.raises(ValueError, match="max_run >= 4"):
        select(distance_table(8, 3, 1, "angular"), 4, selector="gromov")
    with pytest.raises(ValueError, match="needs a ScoreTable scored with estimator='angular'"):
        select(lambda s, n: 0.5, 2, selector="gromov", num_blocks=8)
    with pytest.raises(ValueError, match=r"C\(40, 20\)"):
        select(mi_table(40, 20, 1), 20, selector="exhaustive")
    with pytest.raises(ValueError, match="log_base"):
        select(table, 2, log_base=0.5)
    contiguous = mi_table(8, 1, 2)
    contiguous.values[:, 0] = 0.01
    contiguous.values[2:5, 0] = 1.0
    with pytest.raises(ValueError, match=r"length=3\).*max_run >= 3"):
        select(contiguous, 3)
