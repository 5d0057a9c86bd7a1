"""Fast-Block-Select in the native core, held to a brute-force float64 twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from select_reference import (all_damages, ceil_log_ref, damage_ref, fast_block_select_ref,
                              random_table, runs)
from support import requires_native

pytestmark = requires_native


def _core():
    from miprun._native import core
    return core()


@st.composite
def tables(draw, max_blocks=12):
    num_blocks = draw(st.integers(2, max_blocks))
    num_remove = draw(st.integers(1, num_blocks - 1))
    max_run = draw(st.integers(num_remove, num_blocks + 2))
    kind = draw(st.sampled_from(["uniform", "dpi"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return random_table(num_blocks, max_run, seed, kind), num_remove


def _lookup(values):
    return lambda s, n: values[s, n - 1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.booleans(), st.sampled_from([math.e, 2.0, 10.0]))
def test_matches_reference(case, allow_touching, log_base):
    values, num_remove = case
    result = _core().fast_block_select(values, num_remove, log_base=log_base,
                                       allow_touching=allow_touching)
    removed, scored, iterations, converged = fast_block_select_ref(
        _lookup(values), values.shape[0], num_remove, log_base=log_base,
        allow_touching=allow_touching)
    assert result.removed == removed
    assert result.iterations == iterations
    assert result.converged == converged
    assert result.single_evaluations == values.shape[0]
    assert result.evaluations == sum(1 for (_, n) in scored if n > 1)


@settings(max_examples=100, deadline=None)
@given(tables())
def test_valid_plan_never_better_than_optimal(case):
    values, num_remove = case
    result = _core().fast_block_select(values, num_remove)
    removed = result.removed
    assert len(removed) == num_remove == len(set(removed))
    assert all(0 <= b < values.shape[0] for b in removed)
    assert removed == sorted(removed)
    # without touching, the chosen runs stay separated: the plan's runs are the groups' runs
    assert len(runs(removed)) == len(runs(result.trace[-1].pruning_set))
    best = _core().optimal(np.ascontiguousarray(values[:, :num_remove]), num_remove)[1]
    assert damage_ref(removed, values) >= best - 1e-12


@settings(max_examples=80, deadline=None)
@given(tables(), st.booleans())
def test_callback_equals_table_and_counts_calls(case, allow_touching):
    values, num_remove = case
    calls = []

    def score(s, n):
        calls.append((s, n))
        return float(values[s, n - 1])

    from_table = _core().fast_block_select(values, num_remove, allow_touching=allow_touching)
    from_callback = _core().fast_block_select_callback(values.shape[0], score, num_remove,
                                                       allow_touching=allow_touching)
    assert from_callback.removed == from_table.removed
    assert from_callback.iterations == from_table.iterations
    assert len(calls) == len(set(calls))  # every run scored once
    assert from_callback.single_evaluations + from_callback.evaluations == len(calls)
    assert from_table.evaluations == from_callback.evaluations


@settings(max_examples=60, deadline=None)
@given(tables())
def test_trace_is_consistent(case):
    values, num_remove = case
    result = _core().fast_block_select(values, num_remove)
    single = values[:, 0]
    for i, it in enumerate(result.trace):
        if i + 1 < len(result.trace):
            assert result.trace[i + 1].pruning_set == it.new_pruning_set
        assert [(g.start, g.length) for g in it.groups] == runs(it.pruning_set)
        assert it.chosen_sum >= it.current_sum
        chosen = []
        for g in it.groups:
            assert g.k == min(ceil_log_ref(g.length, math.e) + 5, g.listed)
            starts = [c.start for c in g.candidates]
            assert g.start in starts and g.chosen_start in starts
            assert len(starts) in (g.k, g.k + 1) and len(set(starts)) == len(starts)
            for c in g.candidates:
                assert c.actual == values[c.start, g.length - 1]
                assert c.estimated == pytest.approx(single[c.start:c.start + g.length].sum(), abs=1e-12)
            chosen.append((g.chosen_start, g.length))
            assert it.chosen_sum >= 0
        assert sorted(b for s, n in chosen for b in range(s, s + n)) == it.new_pruning_set
        assert sum(values[s, n - 1] for s, n in chosen) == pytest.approx(it.chosen_sum, abs=1e-12)
    assert result.trace[-1].new_pruning_set == result.removed
    assert result.converged and result.trace[-1].pruning_set == result.removed


def _planted(seed):
    """Greedy singles mislead: blocks 3..5 are the best singles, but together they are
    destructive (run score 0.1), while run 10..12, made of the next-best singles, is
    clearly the most redundant run of length 3."""
    rng = np.random.default_rng(seed)
    values = random_table(16, 3, seed) * 0.15
    values[:, 0] = rng.uniform(0.2, 0.5, 16)
    values[3:6, 0] = [0.9, 0.89, 0.88]
    values[10:13, 0] = [0.8, 0.79, 0.78]
    values[10, 2] = 0.75
    values[3, 2] = 0.1
    return values


@pytest.mark.parametrize("seed", range(5))
def test_recovers_planted_run(seed):
    values = _planted(seed)
    greedy = _core().greedy(values[:, 0].copy(), 3)
    assert greedy == [3, 4, 5]
    result = _core().fast_block_select(values, 3)
    assert result.removed == [10, 11, 12]
    assert _core().optimal(values, 3)[0] == [10, 11, 12]
    # pool = {3,4,5,10,11,12}: S = 2 runs of length 3, both scored, once
    assert result.trace[0].groups[0].listed == 2 and result.evaluations == 2


def test_recovers_planted_pair_of_groups():
    # two groups (1,2) and (8,9,10) of the best singles; the runs (4,2) and (13,3) of the
    # alternative blocks are much better, and only a conflict-free choice takes both
    rng = np.random.default_rng(11)
    values = random_table(18, 5, 11) * 0.1
    values[:, 0] = rng.uniform(0.1, 0.3, 18)
    values[[1, 2, 8, 9, 10], 0] = 0.95
    values[[4, 5, 13, 14, 15], 0] = 0.9
    values[4, 1] = 0.8
    values[13, 2] = 0.7
    result = _core().fast_block_select(values, 5)
    assert result.removed == [4, 5, 13, 14, 15]
    assert result.converged


def test_max_iterations_is_reported():
    for seed in range(500):
        values = random_table(12, 6, seed)
        if _core().fast_block_select(values, 5).iterations >= 3:
            break
    else:
        pytest.fail("no table needing 3 iterations in 500 seeds")
    capped = _core().fast_block_select(values, 5, max_iterations=1)
    assert capped.iterations == 1 and not capped.converged
    assert capped.removed == capped.trace[0].new_pruning_set != capped.trace[0].pruning_set


def test_touching_runs_merge_into_one_group():
    # P = {1,2,6,7} (groups (1,2), (6,2)), A = {3,4,0,9}. The best pair of runs, (1,2) and
    # (3,2), touch: allowed, they win and merge into one group of 4 at the next pass;
    # forbidden, (3,2) and (6,2) win.
    values = random_table(10, 4, 5) * 0.1
    values[:, 0] = [0.5, 0.95, 0.95, 0.9, 0.9, 0.1, 0.94, 0.94, 0.2, 0.5]
    values[1, 1], values[3, 1], values[6, 1] = 0.6, 0.8, 0.4
    strict = _core().fast_block_select(values, 4, allow_touching=False)
    assert strict.trace[0].pruning_set == [1, 2, 6, 7]
    assert strict.removed == [3, 4, 6, 7]
    assert strict.trace[-1].chosen_sum == pytest.approx(1.2)
    touching = _core().fast_block_select(values, 4, allow_touching=True)
    assert touching.trace[0].new_pruning_set == [1, 2, 3, 4]
    assert touching.trace[0].chosen_sum == pytest.approx(1.4)
    assert [(g.start, g.length) for g in touching.trace[1].groups] == [(1, 4)]


def test_ties():
    # equal single scores rank by index: P starts as the first N blocks
    flat = np.where(np.isnan(random_table(9, 3, 2)), np.nan, 0.5)
    first = _core().fast_block_select(flat, 3).trace[0]
    assert first.pruning_set == [0, 1, 2]
    # equal estimates: candidates in order of start (pool = blocks 0..5)
    assert [c.start for c in first.groups[0].candidates] == [0, 1, 2, 3]
    # P = {2, 3}, A = {0, 1}; runs (0, 2) and (2, 2) score exactly the same: P is kept
    values = random_table(7, 2, 3) * 0.1
    values[:, 0] = [0.8, 0.8, 0.9, 0.9, 0.1, 0.2, 0.3]
    values[0, 1] = values[2, 1] = 0.7
    result = _core().fast_block_select(values, 2)
    assert result.removed == [2, 3] and result.iterations == 1
    # candidates come best estimate first: 1.8, 1.7, 1.6
    assert [c.start for c in result.trace[0].groups[0].candidates] == [2, 1, 0]


def test_errors():
    values = random_table(8, 3, 1)
    with pytest.raises(ValueError, match="num_remove=8 but the model has 8 blocks"):
        _core().fast_block_select(values, 8)
    with pytest.raises(ValueError, match="log_base"):
        _core().fast_block_select(values, 2, log_base=1.0)
    with pytest.raises(ValueError, match="max_iterations"):
        _core().fast_block_select(values, 2, max_iterations=0)
    with pytest.raises(ValueError, match="2-D"):
        _core().fast_block_select(values[:, 0].copy(), 2)
    short = values.copy()
    short[:, 0] = 0.0
    short[2:5, 0] = 1.0  # one group of 3 blocks, but the table stops at length 1
    with pytest.raises(ValueError, match=r"run \(start=\d+, length=3\).*max_run >= 3"):
        _core().fast_block_select(np.ascontiguousarray(short[:, :1]), 3)
    with pytest.raises(ValueError, match="NaN"):
        _core().fast_block_select_callback(8, lambda s, n: math.nan, 2)

    def broken(s, n):
        raise KeyError("no hidden state")
    with pytest.raises(KeyError, match="no hidden state"):
        _core().fast_block_select_callback(8, broken, 2)


def test_gap_to_optimal_distribution(capsys):
    """Reports (does not bound) how far Fast-Block-Select lands from the optimum."""
    gaps = {}
    for kind in ("uniform", "dpi"):
        gaps[kind] = []
        for seed in range(150):
            rng = np.random.default_rng(seed)
            num_blocks = int(rng.integers(6, 13))
            num_remove = int(rng.integers(1, num_blocks // 2 + 1))
            values = random_table(num_blocks, num_remove, seed, kind)
            removed = _core().fast_block_select(values, num_remove).removed
            best = min(all_damages(values, num_remove).values())
            gaps[kind].append(damage_ref(removed, values) - best)
    with capsys.disabled():
        for kind, g in gaps.items():
            g = np.array(g)
            assert (g >= -1e-12).all()
            print(f"\nFBS damage gap to optimal ({kind}, 150 tables, T 6-12): "
                  f"optimal in {np.mean(g < 1e-12):.0%}, median {np.median(g):.3f}, "
                  f"p90 {np.quantile(g, 0.9):.3f}, max {g.max():.3f}")
