"""The measurer: many plans in one sweep, each measured as its own pruned model would be, wherever the weights are."""

from __future__ import annotations

import copy
import itertools
import secrets

import pytest
import torch
from tiny_models import ALL_FAMILIES, calibration_ids, save_sharded, tiny_model

from miprun.heal.fit import heal_cuts
from miprun.heal.options import HealOptions
from miprun.hidden.bypass import bypassed
from miprun.hidden.device_map import DeviceMapSource
from miprun.hidden.stream import prepare_offload
from miprun.measure import Candidate, Measurer
from miprun.measure.sweep import sweep_candidates


def _reference(model, ids, removed):
    """Loss and KL of one pruned model by its own full forward pass, in float64 (the specification)."""
    def logp(r):
        with bypassed(model, r), torch.inference_mode():
            return model(input_ids=ids, use_cache=False).logits[:, :-1].double().log_softmax(-1)

    dense, pruned = logp(()), logp(removed)
    nll = -pruned.gather(-1, ids[:, 1:, None]).mean().item()
    kl = (dense.exp() * (dense - pruned)).sum(-1).mean().item()
    return nll, kl


def _random_plans(rng, num_blocks, k):
    every = [c for n in range(1, num_blocks) for c in itertools.combinations(range(num_blocks), n)]
    return [every[int(i)] for i in torch.randperm(len(every), generator=rng)[:k]]


@pytest.mark.parametrize("family", [f for f in ALL_FAMILIES if f != "mixtral"])
def test_every_plan_measures_as_its_own_pruned_model_in_float64(family):
    seed = secrets.randbelow(2**31)
    rng = torch.Generator().manual_seed(seed)
    model = tiny_model(family, dtype=torch.float64, seed=seed % 97)
    num_blocks = model.config.num_hidden_layers
    ids = calibration_ids(5, 12, seed=seed % 89)
    plans = _random_plans(rng, num_blocks, 6)
    measurer = Measurer(model, ids, batch_size=2)
    got = measurer.measure([(), *plans])
    assert got[0].kl == 0.0 and got[0].tokens == 5 * 11
    for plan, m in zip(plans, got[1:]):
        nll, kl = _reference(model, ids, plan)
        assert m.loss == pytest.approx(nll, rel=1e-12), (seed, plan)
        assert m.kl == pytest.approx(kl, rel=1e-10, abs=1e-14), (seed, plan)
        assert m.kl > 0, (seed, plan)
    assert measurer.sweeps == 1 and measurer.measured == len(set(plans))


def test_mixtral_in_float32():  # its fused experts run in float32 only
    model = tiny_model("mixtral", seed=3)
    ids = calibration_ids(4, 10, seed=5)
    for plan, m in zip([(1,), (0, 3)], Measurer(model, ids).measure([(1,), (0, 3)])):
        nll, kl = _reference(model, ids, plan)
        assert m.loss == pytest.approx(nll, rel=1e-5) and m.kl == pytest.approx(kl, rel=1e-4, abs=1e-7)


def _prefix_runs(plans, num_blocks):
    """Blocks a prefix-sharing sweep runs: at block i, one run per distinct set of removed blocks before i among the
    plans (and the unpruned model) that keep block i."""
    plans = [tuple(p) for p in dict.fromkeys([(), *plans])]
    return sum(len({tuple(b for b in p if b < i) for p in plans if i not in p}) for i in range(num_blocks))


def test_plans_share_every_block_before_they_differ():
    seed = secrets.randbelow(2**31)
    rng = torch.Generator().manual_seed(seed)
    model = tiny_model("llama", num_blocks=8, seed=seed % 97)
    plans = _random_plans(rng, 8, 12)
    result = sweep_candidates(model_source(model), calibration_ids(3, 10), [Candidate(p) for p in plans],
                              batch_size=2)
    assert result.block_runs == _prefix_runs(plans, 8), (seed, plans)
    assert result.block_runs < sum(8 - len(p) for p in [(), *set(plans)])


def model_source(model):
    from miprun.hidden.runner import as_source
    return as_source(model)


def test_a_small_budget_splits_the_sweep_and_changes_nothing():
    seed = secrets.randbelow(2**31)
    model = tiny_model("qwen2", num_blocks=6, seed=seed % 97)
    ids = calibration_ids(6, 12, seed=seed % 89)
    plans = _random_plans(torch.Generator().manual_seed(seed), 6, 10)
    whole = Measurer(model, ids, batch_size=2)
    row = 12 * 32 * 4  # one window of one state (seq_len x hidden float32)
    by_windows = Measurer(model, ids, batch_size=2, budget_bytes=row * (len(set(plans)) + 2) * 2)  # 2 windows
    by_plans = Measurer(model, ids, batch_size=2, budget_bytes=row * 5)  # 3 candidates per sweep, 1 window
    a, b, c = (m.measure(plans) for m in (whole, by_windows, by_plans))
    for x, y, z in zip(a, b, c):
        assert y.loss == pytest.approx(x.loss, rel=1e-6) and z.loss == pytest.approx(x.loss, rel=1e-6), seed
        assert y.kl == pytest.approx(x.kl, rel=1e-5, abs=1e-9) and z.kl == pytest.approx(x.kl, rel=1e-5, abs=1e-9)
        assert x.tokens == y.tokens == z.tokens == 6 * 11
    assert whole.sweeps == 1 and by_windows.sweeps == 3 and by_plans.sweeps == 6 * -(-len(set(plans)) // 3)
    with pytest.raises(ValueError, match="fewer than 3 hidden states"):
        Measurer(model, ids, budget_bytes=row * 2).measure(plans)


def test_screening_reads_the_first_windows_and_the_cache_serves_repeats():
    model = tiny_model("llama", num_blocks=5, seed=2)
    ids = calibration_ids(8, 10, seed=4)
    measurer = Measurer(model, ids, batch_size=4, screen=2)
    full = measurer.measure([(1, 2), (3,)])
    screened = measurer.measure([(1, 2), (3,)], screen=True)
    alone = Measurer(model, ids[:2], batch_size=4).measure([(1, 2), (3,)])
    assert [m.loss for m in screened] == pytest.approx([m.loss for m in alone], rel=1e-6)
    assert screened[0].tokens == 2 * 9 and full[0].tokens == 8 * 9
    sweeps = measurer.sweeps
    assert measurer.measure([(3,), (1, 2)]) == full[::-1] and measurer.sweeps == sweeps  # served from the cache
    assert measurer([(1, 2)], criterion="loss") == [full[0].loss] and measurer([(1, 2)]) == [full[0].kl]


@pytest.mark.parametrize("bad, match", [
    ([(7,)], "does not fit a model of 5 blocks"), ([(0, 1, 2, 3, 4)], "at least one kept"), ([(-1,)], "blocks"),
])
def test_plans_that_do_not_fit_the_model_are_refused(bad, match):
    measurer = Measurer(tiny_model("llama", num_blocks=5), calibration_ids(2, 8))
    with pytest.raises(ValueError, match=match):
        measurer.measure(bad)


def test_bad_measurer_arguments_are_refused():
    model = tiny_model("llama", num_blocks=3)
    for kwargs, match in [(dict(input_ids=calibration_ids(2, 1)), "at least 2 tokens"),
                          (dict(input_ids=calibration_ids(2, 8), screen=-1), "screen"),
                          (dict(input_ids=calibration_ids(2, 8), batch_size=0), "batch_size")]:
        with pytest.raises(ValueError, match=match):
            Measurer(model, **kwargs)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_a_healed_candidate_measures_as_the_folded_model(family):
    model = tiny_model(family, num_blocks=6, seed=5, dtype=torch.float64)
    ids = calibration_ids(10, 12, seed=6)
    healing = heal_cuts(model, [2, 3], ids[:8], options=HealOptions(heal="linear", heal_ridge=0.0), fold=False)
    assert healing.maps, "the plan leaves a cut the heal folds"
    measured = Measurer(model, ids[8:], batch_size=2).measure([(2, 3), healing.candidate([2, 3])])
    folded = copy.deepcopy(model)
    healing.fold(folded)
    nll, kl_folded_dense = _reference(folded, ids[8:], (2, 3))
    # (Gemma's norms compute in float32 whatever the model's dtype: their weight folds round there)
    assert measured[1].loss == pytest.approx(nll, rel=1e-10 if family != "gemma3_text" else 1e-6)
    assert measured[1].loss != pytest.approx(measured[0].loss, rel=1e-6)  # the maps changed the pruned model
    # its KL is from the unpruned model itself, not from the folded one
    assert measured[1].kl != pytest.approx(kl_folded_dense, rel=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text", "opt"])
def test_streamed_and_mapped_weights_measure_what_the_model_in_memory_measures(family, tmp_path):
    model = tiny_model(family, preset="stream", num_blocks=5, seed=8)
    folder = save_sharded(model, tmp_path / "m")
    ids = calibration_ids(4, 16, seed=9)
    plans = [(1,), (1, 2), (0, 4), (3,)]
    want = Measurer(model, ids, batch_size=2).measure(plans)
    streamed = prepare_offload(folder, n_samples=4, seq_len=16, batch_size=2, device="cpu")
    mapped = DeviceMapSource.load(folder, device_map="auto")
    for source in (streamed, mapped):
        got = Measurer(source, ids, batch_size=2).measure(plans)
        for g, w in zip(got, want):
            assert g.loss == pytest.approx(w.loss, rel=1e-5) and g.kl == pytest.approx(w.kl, rel=1e-4, abs=1e-8)
    # a streamed sweep leaves nothing resident
    assert all(p.is_meta for p in streamed.model.parameters())


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2", "qwen2", "opt"])
def test_states_of_few_windows_are_packed_into_full_batches_and_measure_the_same(family, monkeypatch):
    """Two windows per state and batches of eight: four states per block call, the same numbers as one call each."""
    from miprun.hidden import runner

    model = tiny_model(family, num_blocks=5, seed=7, dtype=torch.float64)
    ids = calibration_ids(2, 12, seed=8)
    plans = [(1,), (2,), (3,), (1, 3), (0, 2), (4,)]
    calls = []
    real = runner.BlockTurn.run_many

    def spy(self, states):
        calls.append(len(states))
        return real(self, states)

    monkeypatch.setattr(runner.BlockTurn, "run_many", spy)
    packed = Measurer(model, ids, batch_size=8).measure(plans)
    assert max(calls) == 4  # as many two-window states as fill a batch of eight
    alone = Measurer(model, ids, batch_size=2).measure(plans)  # each state fills its batch: one call each
    for a, b in zip(packed, alone):
        assert a.loss == pytest.approx(b.loss, rel=1e-12) and a.kl == pytest.approx(b.kl, rel=1e-10, abs=1e-15)
    for plan, m in zip(plans, packed):
        nll, kl = _reference(model, ids, plan)
        assert m.loss == pytest.approx(nll, rel=1e-12) and m.kl == pytest.approx(kl, rel=1e-10, abs=1e-15)
