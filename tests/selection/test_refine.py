"""Swap refinement after verify: measured swaps along the plan's runs, never a worse plan."""

from __future__ import annotations

import itertools
import secrets

import numpy as np
import pytest
import torch
from support import requires_native
from tiny_models import tiny_model

from miprun.evaluate.calibration_loss import CalibrationLoss
from miprun.scoring.score import score_blocks
from miprun.selection.measured import Measured
from miprun.selection.plan import runs_of
from miprun.selection.refine import refine
from miprun.selection.verify import companion_runs, verify


class _Additive:
    """``loss(P) = sum of w[b]``: the swap estimate is then exact. Counts its calls."""

    def __init__(self, w):
        self.w, self.calls = w, []

    def __call__(self, removed):
        self.calls.append(tuple(removed))
        return float(sum(self.w[b] for b in removed))


def _adjacent(plan, num_blocks):
    gone = set(plan)
    return sorted({s - 1 for s, _ in runs_of(plan) if s > 0 and s - 1 not in gone}
                  | {s + n for s, n in runs_of(plan) if s + n < num_blocks and s + n not in gone})


def test_one_round_takes_the_best_swap_along_the_runs_when_the_loss_is_additive():
    seed = secrets.randbelow(2**31)
    rng = np.random.default_rng(seed)
    T, N = 12, 4
    w = rng.random(T)
    start = sorted(rng.choice(T, N, replace=False).tolist())
    loss = _Additive(w)
    plan, trace = refine(start, Measured(loss), T, 1)
    swaps = [sorted([x for x in start if x != b] + [c]) for b in start for c in _adjacent(start, T)]
    best = min(swaps, key=lambda p: sum(w[b] for b in p))
    expected = best if sum(w[b] for b in best) < sum(w[b] for b in start) else start
    assert plan == expected, (seed, start)
    (first,) = trace["rounds"]
    assert sorted(int(c) for c in first["add"]) == _adjacent(start, T) and sorted(int(b) for b in first["drop"]) == start
    # every loss call is a distinct plan, and the trace counts them
    assert len(loss.calls) == len(set(loss.calls)) == trace["plans_measured"]
    assert trace["plans_measured"] <= 1 + len(_adjacent(start, T)) + N + 2


def test_rounds_never_raise_the_loss_and_stop_at_a_local_optimum():
    seed = secrets.randbelow(2**31)
    rng = np.random.default_rng(seed)
    T, N = 10, 3
    pair = rng.random((T, T))  # a loss with interactions: the estimate is only an estimate

    def loss(removed):
        return float(sum(pair[a, b] for a, b in itertools.combinations(removed, 2)) + sum(pair[b, b] for b in removed))

    start = sorted(rng.choice(T, N, replace=False).tolist())
    plan, trace = refine(start, Measured(loss), T, 50)
    losses = [r["value"] for r in trace["rounds"]]
    assert losses == sorted(losses, reverse=True) and trace["value"] == loss(plan) <= loss(start), seed
    assert not trace["rounds"][-1]["moved"] or len(trace["rounds"]) == 50
    assert trace["start_value"] == loss(start) and len(plan) == N and len(set(plan)) == N


@requires_native
def test_verify_adds_the_refined_plan_to_the_candidates_and_counts_its_measurements():
    seed = secrets.randbelow(2**31)
    model = tiny_model("llama", preset="eval", num_blocks=8, seed=seed % 1000)
    ids = torch.randint(0, 64, (4, 24), generator=torch.Generator().manual_seed(seed))
    table = score_blocks(model, ids[:3], num_remove=3, progress=False, companions=companion_runs(3))
    calls = []
    oracle = CalibrationLoss(model, ids[3:], batch_size=4)

    def loss(removed):
        calls.append(tuple(removed))
        return oracle(removed)

    plain = verify(table, 3, CalibrationLoss(model, ids[3:], batch_size=4), k=2).trace[-1]
    plan = verify(table, 3, loss, k=2, refine_rounds=2)
    entry = plan.trace[-1]
    assert entry["kind"] == "verify" and entry["refine"]["kind"] == "refine", seed
    assert entry["measured"]["plans_measured"] == len(calls) == len(set(calls)), seed  # each plan measured once
    assert entry["value"] == min(c["value"] for c in entry["candidates"]) <= plain["value"]
    assert plan.removed == entry["candidates"][entry["chosen"]]["removed"] == entry["refine"]["removed"]
    if entry["refine"]["rounds"][0]["moved"]:
        assert entry["chosen_sources"] == ["refine#0"] and entry["value"] < plain["value"]
    else:
        assert plan.removed == [c for c in plain["candidates"]][plain["chosen"]]["removed"]


@requires_native
def test_refine_rounds_must_be_a_count():
    model = tiny_model("llama", preset="eval", num_blocks=5, seed=1)
    ids = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    table = score_blocks(model, ids[:2], num_remove=2, progress=False)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="refine_rounds must be an int"):
            verify(table, 2, lambda r: 0.0, refine_rounds=bad)
