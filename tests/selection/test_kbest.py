"""The K best plans of each selector's own objective, against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import requires_native

from miprun._native import core
from miprun.selection.kbest import kbest_column, kbest_fbs, kbest_single
from miprun.selection.plan import runs_of
from miprun.selection.select import select
from miprun.selection.verify import verify
from miprun.scoring.table import ScoreTable

pytestmark = requires_native


def _damage(subset, scores):
    runs = runs_of(subset)
    if any(length > scores.shape[1] for _, length in runs):
        return None
    return sum(1.0 - scores[s, length - 1] for s, length in runs)


def _brute(scores, num_remove):
    """Every feasible plan with its damage, sorted by damage (the exhaustive enumeration)."""
    plans = [(_damage(c, scores), list(c)) for c in itertools.combinations(range(scores.shape[0]), num_remove)]
    return sorted((d, c) for d, c in plans if d is not None)


@st.composite
def tables(draw):
    num_blocks = draw(st.integers(2, 9))
    num_remove = draw(st.integers(1, num_blocks - 1))
    max_run = draw(st.integers(1, num_remove))
    # a few distinct values make ties common; floats make them rare
    values = st.sampled_from([0.0, 0.25, 0.5, 1.0]) if draw(st.booleans()) else st.floats(0.0, 1.0)
    flat = draw(st.lists(values, min_size=num_blocks * max_run, max_size=num_blocks * max_run))
    scores = np.array(flat, dtype=np.float64).reshape(num_blocks, max_run)
    return scores, num_remove, draw(st.integers(1, 40))


@settings(max_examples=300, deadline=None)
@given(tables())
def test_optimal_kbest_is_the_sorted_brute_force(case):
    scores, num_remove, k = case
    brute = _brute(scores, num_remove)
    if not brute:
        with pytest.raises(ValueError, match="no plan removes"):
            core().optimal_kbest(scores, num_remove, k)
        return
    got = core().optimal_kbest(scores, num_remove, k)
    assert len(got) == min(k, len(brute))
    assert len({tuple(r) for r, _ in got}) == len(got)  # no plan twice
    for removed, dmg in got:
        assert dmg == pytest.approx(_damage(removed, scores), abs=1e-12)  # each plan's own damage
    np.testing.assert_allclose([d for _, d in got], [d for d, _ in brute[:len(got)]], atol=1e-12)
    if len(got) < len(brute):  # whatever was left out is no better than the last plan given
        assert brute[len(got)][0] >= got[-1][1] - 1e-12
    removed, dmg = core().optimal(scores, num_remove)
    assert got[0] == (removed, dmg)  # the first plan is optimal's own, ties included


def test_optimal_kbest_refuses_bad_k():
    with pytest.raises(ValueError, match="k=0"):
        core().optimal_kbest(np.ones((4, 2)), 2, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0]) | st.floats(-1, 1), min_size=2, max_size=9), st.data())
def test_kbest_single_is_the_sorted_brute_force(single, data):
    single = np.array(single)
    num_remove = data.draw(st.integers(1, len(single) - 1))
    k = data.draw(st.integers(1, 30))
    got = kbest_single(single, num_remove, k)
    brute = sorted((-math.fsum(single[list(c)]), list(c)) for c in itertools.combinations(range(len(single)),
                                                                                         num_remove))
    assert len(got) == min(k, len(brute)) and len({tuple(r) for r, _ in got}) == len(got)
    np.testing.assert_allclose([v for _, v in got], [-v for v, _ in brute[:len(got)]], atol=1e-12)
    assert got[0][0] == core().greedy(single, num_remove)


def test_kbest_column_orders_runs():
    assert kbest_column(np.array([0.2, 0.9, 0.9, 0.1]), 2, 3) == [([1, 2], 0.9), ([2, 3], 0.9), ([0, 1], 0.2)]


def _random_table(rng, num_blocks, max_run):
    values = rng.random((num_blocks, max_run)) * 2.0
    for s in range(num_blocks):
        values[s, num_blocks - s:] = np.nan
    return ScoreTable(values=values, estimator="hist", settings={})


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("allow_touching", [True, False])
def test_kbest_fbs_against_brute_force_over_the_final_pass(seed, allow_touching):
    rng = np.random.default_rng(seed)
    num_blocks = int(rng.integers(5, 10))
    num_remove = int(rng.integers(2, min(5, num_blocks - 1) + 1))
    table = _random_table(rng, num_blocks, num_remove)
    plan = select(table, num_remove, allow_touching=allow_touching)
    last = [t for t in plan.trace if t["kind"] == "iteration"][-1]
    got = kbest_fbs(last["groups"], plan.removed, last["chosen_sum"], 50, allow_touching=allow_touching)
    assert got[0][0] == plan.removed
    # brute force: every choice of one scored candidate per group, feasible, best sum per plan
    best: dict[tuple, float] = {}
    for choice in itertools.product(*[[(c["start"], c["actual"], g["length"]) for c in g["candidates"]]
                                      for g in last["groups"]]):
        runs = sorted((s, length) for s, _, length in choice)
        gap = 0 if allow_touching else 1
        if any(s1 < s0 + l0 + gap for (s0, l0), (s1, _) in zip(runs, runs[1:])):
            continue
        key = tuple(b for s, length in runs for b in range(s, s + length))
        best[key] = max(best.get(key, -math.inf), math.fsum(a for _, a, _ in choice))
    rest = sorted(((v, k) for k, v in best.items() if list(k) != plan.removed), key=lambda vk: -vk[0])
    assert {tuple(r) for r, _ in got} == {tuple(plan.removed)} | {k for _, k in rest}  # 50 > all of them
    np.testing.assert_allclose([v for _, v in got[1:]], [v for v, _ in rest], atol=1e-12)
    assert got[0][1] >= max([v for v, _ in rest], default=-math.inf) - 1e-9  # its plan is the pass's best


@pytest.mark.parametrize("selector", ["fast_block_select", "optimal", "exhaustive", "greedy"])
@pytest.mark.parametrize("portfolio", [True, False])
def test_verify_keeps_the_least_loss_with_a_fake_loss(selector, portfolio):
    table = _random_table(np.random.default_rng(3), 8, 3)
    calls = []

    def loss(removed):
        calls.append(removed)
        return float(sum((b * 7919) % 13 for b in removed))

    plan = verify(table, 3, loss, selector=selector, k=4, portfolio=portfolio)
    entry = plan.trace[-1]
    assert entry["kind"] == "verify" and entry["measured"]["plans_measured"] == len(calls) == len(set(calls))
    losses = [c["value"] for c in entry["candidates"]]
    assert plan.removed == entry["candidates"][entry["chosen"]]["removed"]
    assert entry["value"] == min(losses) == loss(tuple(plan.removed))
    own = [c for c in entry["candidates"] if any(s.startswith(selector + "#") for s in c["sources"])]
    if selector == "fast_block_select":  # only the plans its final pass compared: maybe fewer
        assert 1 <= len(own) <= 4
    else:
        assert len(own) == min(4, math.comb(8, 3))
    assert entry["candidates"][0]["removed"] == select(table, 3, selector=selector).removed
    assert entry["portfolio"] == ([s for s in ("fast_block_select", "optimal", "greedy") if s != selector]
                                  if portfolio else [])


def test_select_refuses_the_measured_arguments_and_says_where_they_went():
    table = _random_table(np.random.default_rng(0), 5, 2)
    for moved in (dict(verify=2), dict(loss=lambda r: 0.0), dict(refine=1), dict(portfolio=False)):
        with pytest.raises(TypeError, match="miprun.verify"):
            select(table, 2, **moved)
    with pytest.raises(ValueError, match="miprun.sleb"):
        select(table, 2, selector="sleb")
    for bad in (dict(k=0), dict(k=-1), dict(refine_rounds=-1), dict(confirm=0), dict(portfolio=1),
                dict(selector="sleb"), dict(criterion="ppl")):
        with pytest.raises(ValueError):
            verify(table, 2, lambda r: 0.0, **bad)
    with pytest.raises(ValueError, match="ScoreTable"):
        verify(None, 2, lambda r: 0.0)
    with pytest.raises(ValueError, match="Measurer or a callable"):
        verify(table, 2, 3.0)
