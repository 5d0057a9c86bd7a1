"""optimal and exhaustive: the exact minima of the additive damage, held to brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from select_reference import all_damages, damage_ref, random_table, runs
from support import requires_native

pytestmark = requires_native


@st.composite
def tables(draw, max_blocks=12):
    num_blocks = draw(st.integers(2, max_blocks))
    num_remove = draw(st.integers(1, num_blocks - 1))
    max_run = draw(st.integers(num_remove, num_blocks + 2))  # N and larger
    kind = draw(st.sampled_from(["uniform", "dpi"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return random_table(num_blocks, max_run, seed, kind), num_remove


def _core():
    from miprun._native import core
    return core()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_optimal_equals_exhaustive_and_beats_every_subset(case):
    values, num_remove = case
    scores = np.ascontiguousarray(values[:, :num_remove])
    removed, objective = _core().optimal(scores, num_remove)
    damages = all_damages(scores, num_remove)
    best = min(damages.values())
    assert len(removed) == num_remove == len(set(removed))
    assert objective == pytest.approx(best, abs=1e-12)
    assert damage_ref(removed, scores) == pytest.approx(objective, abs=1e-12)
    assert all(objective <= d + 1e-12 for d in damages.values())

    ex_removed, ex_objective, subsets = _core().exhaustive(scores, num_remove)
    first_best = min(damages, key=lambda c: (damages[c], c))  # lexicographically first optimum
    assert ex_objective == pytest.approx(best, abs=1e-12)
    assert damages[tuple(ex_removed)] == pytest.approx(best, abs=1e-12)
    assert damages[first_best] == pytest.approx(damages[tuple(ex_removed)], abs=1e-12)
    assert subsets == len(damages)


@settings(max_examples=60, deadline=None)
@given(st.integers(4, 12), st.integers(0, 2**32 - 1), st.data())
def test_runs_limited_to_max_run(num_blocks, seed, data):
    # a table shorter than N: runs longer than max_run are infeasible for both solvers
    num_remove = data.draw(st.integers(2, num_blocks - 1))
    max_run = data.draw(st.integers(1, num_remove - 1))
    scores = random_table(num_blocks, max_run, seed)
    damages = all_damages(scores, num_remove)
    best = min(damages.values())
    if best == np.inf:
        with pytest.raises(ValueError, match="max_run"):
            _core().optimal(scores, num_remove)
        with pytest.raises(ValueError, match="max_run"):
            _core().exhaustive(scores, num_remove)
        return
    removed, objective = _core().optimal(scores, num_remove)
    assert objective == pytest.approx(best, abs=1e-12)
    assert max(n for _, n in runs(removed)) <= max_run
    assert _core().exhaustive(scores, num_remove)[1] == pytest.approx(best, abs=1e-12)


def test_optimal_prefers_one_identity_run_over_scattered_good_blocks():
    # five blocks: single scores 0.9 each, but the run (1, 3) is an identity (damage 0),
    # which beats any three separated blocks (damage >= 0.3)
    rng = np.random.default_rng(7)
    scores = random_table(7, 3, 7) * 0.2
    scores[:, 0] = 0.9 + 0.01 * rng.random(7)
    scores[1, 2] = 1.0
    removed, objective = _core().optimal(scores, 3)
    assert removed == [1, 2, 3]
    assert objective == pytest.approx(0.0, abs=1e-15)


def test_exhaustive_refuses_too_many_subsets():
    scores = random_table(40, 20, 1)
    with pytest.raises(ValueError, match=r"C\(40, 20\).*optimal"):
        _core().exhaustive(scores, 20)
    with pytest.raises(ValueError, match="max_subsets"):
        _core().exhaustive(random_table(12, 6, 1), 6, max_subsets=100)


def test_nan_inside_the_model_is_refused():
    scores = random_table(8, 3, 3)
    scores[2, 1] = np.nan  # run (2, 2) lies inside the model
    with pytest.raises(ValueError, match=r"NaN for run \(start=2, length=2\)"):
        _core().optimal(scores, 3)
    with pytest.raises(ValueError, match=r"NaN for run \(start=2, length=2\)"):
        _core().exhaustive(scores, 3)


@pytest.mark.parametrize("num_remove", [0, -1, 8, 9])
def test_bad_num_remove(num_remove):
    scores = random_table(8, 3, 3)
    for solver in (_core().optimal, _core().exhaustive):
        with pytest.raises(ValueError, match=f"num_remove={num_remove} but the model has 8 blocks"):
            solver(scores, num_remove)
    with pytest.raises(ValueError, match="num_remove"):
        _core().greedy(scores[:, 0].copy(), num_remove)


def test_infeasible_plan_is_refused():
    # 4 of 5 blocks in runs of length 1 need 4 + 3 blocks
    with pytest.raises(ValueError, match="no plan removes 4 of 5 blocks"):
        _core().optimal(random_table(5, 1, 2), 4)
