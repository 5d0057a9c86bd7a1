"""verify's portfolio measures the ShortGPT and Gromov plans and the Gaussian FBS / optimal plans, read from
companion tables of the same pass."""

from __future__ import annotations

import secrets

import pytest
import torch
from support import STORIES, requires_native, requires_stories
from tiny_models import tiny_model

from miprun.evaluate.calibration_loss import CalibrationLoss
from miprun.scoring.score import score_blocks
from miprun.selection.options import SelectionOptions
from miprun.selection.select import select
from miprun.selection.verify import BASELINE_PORTFOLIO, GAUSSIAN_PORTFOLIO, companion_runs, verify

pytestmark = [requires_native]


class _Counted:
    """A loss that counts its calls per plan."""

    def __init__(self, loss):
        self.loss, self.calls = loss, []

    def __call__(self, removed):
        self.calls.append(tuple(removed))
        return self.loss(removed)


def _check_baselines_measured(model, ids, num_remove, selector, seed):
    """Score once with companions; verify's candidates hold the plans shortgpt and gromov pick alone."""
    score_ids, held_ids = ids[:-1], ids[-1:]
    table = score_blocks(model, score_ids, num_remove=num_remove, progress=False, companions=companion_runs(num_remove),
                         estimator=BASELINE_PORTFOLIO.get(selector, "hist"))
    loss = _Counted(CalibrationLoss(model, held_ids, batch_size=4))
    plan = verify(table, num_remove, loss, selector=selector, k=2)
    entry = plan.trace[-1]
    assert entry["kind"] == "verify" and entry["skipped"] == [], seed
    # each distinct plan measured once, the best kept
    assert sorted(loss.calls) == sorted({tuple(c["removed"]) for c in entry["candidates"]}) , seed
    assert entry["measured"]["plans_measured"] == len(loss.calls) == len(set(loss.calls))
    assert entry["value"] == min(c["value"] for c in entry["candidates"]) and plan.removed == \
        entry["candidates"][entry["chosen"]]["removed"]
    for name, estimator in BASELINE_PORTFOLIO.items():
        if name == selector:
            assert name not in entry["portfolio"]
            continue
        assert name in entry["portfolio"], seed
        # what the baseline picks on its own table, scored separately
        alone = score_blocks(model, score_ids, estimator=estimator, max_run=companion_runs(num_remove)[estimator],
                             progress=False)
        expected = select(alone, num_remove, selector=name).removed
        holders = [c for c in entry["candidates"] if f"{name}#0" in c["sources"]]
        assert len(holders) == 1 and holders[0]["removed"] == expected, (seed, name, holders, expected)
        assert holders[0]["loss"] == pytest.approx(loss.loss(tuple(expected)))
    # the MI selectors on the pooled Gaussian table, scored alone
    gaussian = score_blocks(model, score_ids, estimator="gaussian", max_run=num_remove, progress=False)
    for name in GAUSSIAN_PORTFOLIO:
        assert f"{name}@gaussian" in entry["portfolio"], seed
        expected = select(gaussian, num_remove, selector=name).removed
        holders = [c for c in entry["candidates"] if f"{name}@gaussian#0" in c["sources"]]
        assert len(holders) == 1 and holders[0]["removed"] == expected, (seed, name, holders, expected)


@pytest.mark.parametrize("selector", ["fast_block_select", "optimal", "greedy", "shortgpt", "gromov"])
def test_verify_measures_the_baselines_on_a_random_model(selector):
    seed = secrets.randbelow(2**31)
    model = tiny_model("llama", preset="eval", num_blocks=6, seed=seed % 1000)
    ids = torch.randint(0, 64, (4, 24), generator=torch.Generator().manual_seed(seed))
    _check_baselines_measured(model, ids, 2 + seed % 3, selector, seed)


@requires_stories
@pytest.mark.parametrize("num_remove", [1, 2, 3])
def test_verify_measures_the_baselines_on_stories260k(num_remove):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    seed = secrets.randbelow(2**31)
    ids = torch.randint(1, 512, (4, 32), generator=torch.Generator().manual_seed(seed))
    _check_baselines_measured(model, ids, num_remove, "fast_block_select", seed)


def test_without_companions_the_baselines_are_skipped_with_the_reason():
    model = tiny_model("llama", preset="eval", num_blocks=5, seed=secrets.randbelow(1000))
    ids = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(secrets.randbelow(2**31)))
    table = score_blocks(model, ids[:2], num_remove=2, progress=False)
    plan = verify(table, 2, CalibrationLoss(model, ids[2:]), selector="optimal", k=1)
    entry = plan.trace[-1]
    assert [s["source"] for s in entry["skipped"]] == ["shortgpt", "gromov", "fast_block_select@gaussian",
                                                       "optimal@gaussian"]
    assert all("companion" in s["reason"] for s in entry["skipped"])
    assert entry["portfolio"] == ["fast_block_select", "greedy"]
    assert not any(src.startswith(("shortgpt", "gromov")) or "@" in src
                   for c in entry["candidates"] for src in c["sources"])
    # gromov needs runs of num_remove blocks: a shorter angular companion is skipped with the selector's reason
    short = score_blocks(model, ids[:2], num_remove=2, progress=False, companions={"cosine": 1, "angular": 1})
    entry = verify(short, 2, CalibrationLoss(model, ids[2:]), selector="optimal", k=1).trace[-1]
    reasons = {s["source"]: s["reason"] for s in entry["skipped"]}
    assert set(reasons) == {"gromov", "fast_block_select@gaussian", "optimal@gaussian"} and "max_run >= 2" in \
        reasons["gromov"]
    assert entry["portfolio"] == ["fast_block_select", "greedy", "shortgpt", "gromov"]


def test_selection_options_ask_for_companions_only_for_verify_with_portfolio():
    assert SelectionOptions(num_remove=3, verify=2).companions(3) == {"cosine": 1, "angular": 3, "gaussian": 3}
    assert SelectionOptions(ratio=0.5, verify=1).companions(4) == {"cosine": 1, "angular": 4, "gaussian": 4}
    assert SelectionOptions(num_remove=3, verify=0).companions(3) == {}
    auto = SelectionOptions(num_remove=3)  # verify="auto": on wherever there are windows to hold back
    assert auto.resolve(n_windows=8).companions(3) == {"cosine": 1, "angular": 3, "gaussian": 3}
    assert auto.resolve(n_windows=1).verify == 0 and auto.resolve(n_windows=1).companions(3) == {}
    with pytest.raises(ValueError, match="decided by resolve"):
        auto.companions(3)
    assert SelectionOptions(num_remove=3, verify=2, portfolio=False).companions(3) == {}
