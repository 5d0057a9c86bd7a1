"""Healing: the fold is exact in every family, the fit is the least-squares map it claims to be."""

from __future__ import annotations

import copy
import operator

import pytest
import torch
from torch import nn

from miprun.evaluate.calibration_loss import bypassed
from miprun.heal.fit import heal_cuts
from miprun.heal.options import HealOptions
from miprun.models.blocks import find_blocks, text_config
from miprun.models.families import family_of
from miprun.output.surgery import remove_blocks
from tiny_models import ALL_FAMILIES, calibration_ids, tiny_model

REMOVED = [2, 3, 5]  # two cuts: blocks 2-3 after block 1, and block 5 (the last) after block 4


def _dtype(family: str) -> torch.dtype:
    return torch.float32 if family == "mixtral" else torch.float64  # grouped expert matmuls take no float64


def _logits(model, ids) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits.double()


def _mapped_output(T: torch.Tensor):
    """A forward hook giving a module's output times ``T`` (the heal applied without folding it)."""
    def hook(module, args, output):
        t = T.to(device=output.device, dtype=torch.float64)
        return (output.double() * t if t.ndim == 1 else output.double() @ t).to(output.dtype)
    return hook


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_folded_heal_equals_the_map_applied_by_a_hook_and_reloads(family, tmp_path):
    dtype = _dtype(family)
    model = tiny_model(family, num_blocks=6, dtype=dtype, seed=3)
    ids = calibration_ids(12, 10, seed=5)
    reference = copy.deepcopy(model)
    healing = heal_cuts(model, REMOVED, ids, options=HealOptions(heal="linear"))
    site = family_of(text_config(model.config)).heal
    assert sorted(healing.maps) == [1, 4]
    full = site.full_map
    assert all(T.ndim == (2 if full else 1) for T in healing.maps.values())
    assert [c["method"] for c in healing.report["cuts"]] == ["linear" if full else "scale"] * 2

    blocks, _ = find_blocks(reference)
    for b, T in healing.maps.items():
        operator.attrgetter(site.output)(blocks[b]).register_forward_hook(_mapped_output(T))
        assert not torch.allclose(T.double(), torch.eye(T.shape[0], dtype=torch.float64) if full else
                                  torch.ones_like(T), atol=1e-3), "a heal that changes nothing tests nothing"
    remove_blocks(reference, REMOVED)
    remove_blocks(model, REMOVED)
    fresh = calibration_ids(3, 10, seed=11)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    if site.kind == "norm_plus_one":  # Gemma's norm multiplies by its weight cast to float32, even in float64
        tol = dict(rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(_logits(model, fresh), _logits(reference, fresh), **tol)

    model.save_pretrained(tmp_path / "healed")
    import transformers as tf
    reloaded = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "healed", dtype=dtype,
                                                       attn_implementation="eager").eval()
    assert type(reloaded) is type(model)
    saved = reloaded.state_dict()
    for key, value in model.state_dict().items():
        if key in saved:  # (tied or recomputed buffers aside) the healed weights, as they were folded
            assert torch.equal(saved[key], value), key
    # rotary tables are recomputed at load: logits agree to float32 rounding
    torch.testing.assert_close(_logits(reloaded, fresh), _logits(reference, fresh), rtol=1e-5, atol=1e-5)


class _PlantedRun(nn.Module):
    """A block whose update is exactly linear in the MLP output ``m`` of block ``p`` before it.

    Block ``p`` outputs ``x = a + m``; this block returns ``a + m T = x + m (T - I)``, reading
    ``m`` from a hook on block ``p``'s down projection.
    """

    def __init__(self, source: nn.Module, T: torch.Tensor):
        super().__init__()
        self.T = T
        self.m = None
        source.register_forward_hook(self._grab)

    def _grab(self, module, args, output):
        self.m = output

    def forward(self, hidden_states, *args, **kwargs):
        delta = self.m @ (self.T - torch.eye(self.T.shape[0], dtype=self.T.dtype))
        return hidden_states + delta


@pytest.mark.parametrize("fit", ["sequential", "dense"])
def test_linear_heal_recovers_a_planted_linear_run(fit):
    torch.manual_seed(0)
    model = tiny_model("llama", num_blocks=5, dtype=torch.float64, seed=1)
    d = model.config.hidden_size
    T = torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, dtype=torch.float64)
    blocks, _ = find_blocks(model)
    blocks[2] = _PlantedRun(blocks[1].mlp.down_proj, T)  # block 2 removed: heal after block 1
    ids = calibration_ids(16, 10, seed=2)
    fresh = calibration_ids(3, 10, seed=9)
    unpruned = _logits(model, fresh)
    with bypassed(model, [2]):
        unhealed = _logits(model, fresh)
    assert (unhealed - unpruned).abs().max() > 1e-2
    # one batch: the planted block reads the MLP output of the batch block 1 ran last
    healing = heal_cuts(model, [2], ids, options=HealOptions(heal="linear", heal_fit=fit, heal_ridge=0.0,
                                                          heal_objective="mse"), batch_size=len(ids))
    torch.testing.assert_close(healing.maps[1], T, rtol=1e-8, atol=1e-8)
    with bypassed(model, [2]):
        healed = _logits(model, fresh)
    torch.testing.assert_close(healed, unpruned, rtol=1e-8, atol=1e-8)
    assert healing.report["cuts"][0]["fit"]["relative_residual"] < 1e-12


def _lstsq_map(m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    m, r = m.reshape(-1, m.shape[-1]).double(), r.reshape(-1, r.shape[-1]).double()
    return torch.linalg.lstsq(m, r).solution


def _activations(model, block: int, ids):
    """Block ``block``'s MLP output and output, and every hidden state, from one plain forward."""
    blocks, _ = find_blocks(model)
    got = {}
    hooks = [blocks[block].mlp.down_proj.register_forward_hook(lambda mod, a, o: got.__setitem__("m", o)),
             blocks[block].register_forward_hook(lambda mod, a, o: got.__setitem__("y", o))]
    try:
        with torch.inference_mode():
            hs = model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states
    finally:
        for h in hooks:
            h.remove()
    return got["m"], got["y"], hs


@pytest.mark.parametrize("fit", ["sequential", "dense"])
def test_each_cut_is_the_least_squares_map_of_the_states_it_claims(fit):
    """Sequential: the second cut is fitted on the model with the first cut made and healed; dense: on the unpruned one."""
    model = tiny_model("llama", num_blocks=6, dtype=torch.float64, seed=4)
    ids = calibration_ids(24, 10, seed=6)
    dense_model = copy.deepcopy(model)
    healed = copy.deepcopy(model)
    healing = heal_cuts(healed, [1, 3, 4], ids, options=HealOptions(heal="linear", heal_fit=fit, heal_ridge=0.0,
                                                                   heal_objective="mse"))
    assert sorted(healing.maps) == [0, 2]

    # first cut (block 1, after block 0): both fits see the unpruned model up to there
    m, y, hs = _activations(dense_model, 0, ids)
    torch.testing.assert_close(healing.maps[0], _lstsq_map(m, hs[2] - (y - m)), rtol=1e-7, atol=1e-9)
    # second cut (blocks 3-4, after block 2), target: the unpruned model's h_5
    if fit == "sequential":
        first = copy.deepcopy(dense_model)
        find_blocks(first)[0][0].mlp.down_proj.weight.data = healing.maps[0].T @ \
            find_blocks(first)[0][0].mlp.down_proj.weight.data
        with bypassed(first, [1]):
            m, y, _ = _activations(first, 2, ids)
    else:
        m, y, _ = _activations(dense_model, 2, ids)
    torch.testing.assert_close(healing.maps[2], _lstsq_map(m, hs[5] - (y - m)), rtol=1e-7, atol=1e-9)


def test_refits_are_the_least_squares_maps_of_the_healed_pruned_model():
    """refit=2 after the cut of block 1: blocks 2 and 3 get maps fitted on the model cut and healed so far."""
    model = tiny_model("llama", num_blocks=6, dtype=torch.float64, seed=7)
    ids = calibration_ids(24, 10, seed=8)
    dense_model = copy.deepcopy(model)
    healed = copy.deepcopy(model)
    healing = heal_cuts(healed, [1, 5], ids, options=HealOptions(heal="linear", heal_ridge=0.0, heal_objective="mse",
                                                                heal_refit=2))
    # cut 1 after block 0; refits at blocks 2 and 3; block 4 is the cut of block 5 (not refitted)
    assert sorted(healing.maps) == [0, 2, 3, 4]
    assert [(r["block"], r["after_cut"], r["method"]) for r in healing.report["refits"]] == \
        [(2, [1, 1], "linear"), (3, [1, 1], "linear")]
    _, _, hs = _activations(dense_model, 0, ids)
    current = copy.deepcopy(dense_model)
    blocks = find_blocks(current)[0]
    for b in (0, 2, 3):
        with bypassed(current, [1]):
            m, y, _ = _activations(current, b, ids)
        expected = _lstsq_map(m, hs[b + 1 + (b == 0)] - (y - m))
        torch.testing.assert_close(healing.maps[b], expected, rtol=1e-7, atol=1e-9)
        assert not torch.allclose(expected, torch.eye(expected.shape[0], dtype=torch.float64), atol=1e-3)
        blocks[b].mlp.down_proj.weight.data = healing.maps[b].T @ blocks[b].mlp.down_proj.weight.data
    # the refits bring the pruned model's state after block 3 closer to the unpruned one than the cut alone
    alone = copy.deepcopy(dense_model)
    heal_cuts(alone, [1, 5], ids, options=HealOptions(heal="linear", heal_ridge=0.0, heal_objective="mse"))
    errors = []
    for candidate in (alone, healed):
        with bypassed(candidate, [1]):
            _, _, got = _activations(candidate, 0, ids)
        # a bypassed block keeps its slot in hidden_states: index b + 1 is after block b in both models
        errors.append([float((got[b] - hs[b]).pow(2).sum()) for b in (3, 4)])
    assert errors[1][0] < errors[0][0] and errors[1][1] < errors[0][1], errors


def test_refit_needs_the_sequential_fit():
    with pytest.raises(ValueError, match="heal_fit='sequential'"):
        HealOptions(heal="linear", heal_fit="dense", heal_refit=1)
    with pytest.raises(ValueError, match="heal_refit must be an int >= 0"):
        HealOptions(heal="linear", heal_refit=-1)


def test_a_run_from_block_0_is_left_unhealed_and_said_so():
    model = tiny_model("llama", num_blocks=6, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    healing = heal_cuts(model, [0, 1, 4], calibration_ids(6, 10), options=HealOptions(heal="linear"))
    cuts = healing.report["cuts"]
    assert [c["removed"] for c in cuts] == [[0, 1], [4, 4]]
    assert cuts[0]["method"] is None and "block 0" in cuts[0]["reason"]
    assert cuts[1]["method"] == "linear" and cuts[1]["after_block"] == 3
    assert healing.report["unhealed"] == [[0, 1]]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"model.layers.3.mlp.down_proj.weight"}


def test_opt_with_its_norm_after_the_sum_is_not_healed():
    from tiny_models import tiny_config
    config = tiny_config("opt", num_blocks=5)
    config.do_layer_norm_before = False
    model = tiny_model("opt", config=config, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    healing = heal_cuts(model, [2], calibration_ids(6, 10), options=HealOptions(heal="linear"))
    cut = healing.report["cuts"][0]
    assert cut["method"] is None and "layer norm after the residual sum" in cut["reason"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert healing.maps == {}


def test_a_map_that_does_not_beat_the_unhealed_cut_on_held_out_windows_is_not_folded():
    model = tiny_model("llama", num_blocks=6, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = calibration_ids(16, 12, seed=1)
    # 144 fitted tokens for a 32 x 32 map without ridge: it fits the noise of those tokens
    healing = heal_cuts(model, [2, 3], ids[:12], ids[12:], options=HealOptions(heal="linear", heal_ridge=0.0,
                                                                             heal_objective="mse"))
    cut = healing.report["cuts"][0]
    assert cut["fit"]["relative_residual"] < cut["fit"]["unhealed_relative_residual"]
    assert cut["held_out"]["relative_residual"] >= cut["held_out"]["unhealed_relative_residual"]
    assert cut["method"] is None and "did not lower the residual on the held-out windows" in cut["reason"]
    assert healing.report["unhealed"] == [[2, 3]] and healing.maps == {}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_relative_objective_is_least_squares_weighted_by_the_target_norm():
    model = tiny_model("llama", num_blocks=5, dtype=torch.float64, seed=8)
    ids = calibration_ids(24, 10, seed=9)
    dense_model = copy.deepcopy(model)
    healing = heal_cuts(model, [2], ids, options=HealOptions(heal="linear", heal_ridge=0.0,
                                                             heal_objective="relative"))
    m, y, hs = _activations(dense_model, 1, ids)
    target = hs[3].reshape(-1, m.shape[-1])
    w = (1.0 / (target * target).sum(-1)).sqrt().unsqueeze(1)
    m2, r2 = m.reshape(-1, m.shape[-1]), (hs[3] - (y - m)).reshape(-1, m.shape[-1])
    expect = torch.linalg.lstsq(m2 * w, r2 * w).solution
    torch.testing.assert_close(healing.maps[1], expect, rtol=1e-7, atol=1e-9)
    plain = heal_cuts(copy.deepcopy(dense_model), [2], ids, options=HealOptions(heal="linear", heal_ridge=0.0,
                                                                               heal_objective="mse"))
    assert not torch.allclose(plain.maps[1], healing.maps[1], atol=1e-6)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_every_family_fits_the_state_after_the_run_from_its_own_mlp_output(family):
    """The map is least squares of ``h_{s+L} - a`` on ``m``, with ``m`` read where the family's site says and
    ``a = block output - m``: this holds only if the block really outputs ``a + m``."""
    dtype = _dtype(family)
    model = tiny_model(family, num_blocks=5, dtype=dtype, seed=12)
    ids = calibration_ids(30, 12, seed=13)
    site = family_of(text_config(model.config)).heal
    blocks, _ = find_blocks(model)
    got = {}
    hooks = [operator.attrgetter(site.output)(blocks[1]).register_forward_hook(
                 lambda mod, a, o: got.__setitem__("m", o[0] if isinstance(o, tuple) else o)),
             blocks[1].register_forward_hook(lambda mod, a, o: got.__setitem__("y", o[0] if isinstance(o, tuple)
                                                                                 else o))]
    with torch.inference_mode():
        hs = model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    y = got["y"].double()
    m = got["m"].double().reshape(y.shape)  # OPT's MLP runs on (tokens, d)
    r = (hs[3].double() - (y - m)).reshape(-1, y.shape[-1])
    m = m.reshape(r.shape)
    healing = heal_cuts(copy.deepcopy(model), [2], ids, options=HealOptions(heal="linear", heal_fit="dense",
                                                                            heal_ridge=0.0, heal_objective="mse"))
    if site.full_map:
        expect = torch.linalg.lstsq(m, r).solution
    else:
        expect = (m * r).sum(0) / (m * m).sum(0)
    tol = dict(rtol=1e-6, atol=1e-8) if dtype == torch.float64 else dict(rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(healing.maps[1], expect, **tol)


def test_a_map_that_is_not_finite_is_not_folded(monkeypatch):
    import miprun.heal.fit as fit_module

    model = tiny_model("llama", num_blocks=5, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(fit_module, "solve", lambda stats, ridge: torch.full_like(stats.G, float("nan")))
    healing = heal_cuts(model, [2], calibration_ids(8, 10), options=HealOptions(heal="linear"))
    cut = healing.report["cuts"][0]
    assert cut["method"] is None and "not finite" in cut["reason"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
