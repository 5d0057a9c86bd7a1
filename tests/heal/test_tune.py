"""Tuning the heal's maps: still a fold of the same weights, kept only when it beats the closed form."""

from __future__ import annotations

import copy
import secrets

import pytest
import torch
from support import STORIES, data_file, requires_native, requires_stories
from tiny_models import calibration_ids, tiny_model

from miprun.heal.fit import heal_cuts
from miprun.heal.options import HealOptions
from miprun.heal.tune import _pruned, tune_maps
from miprun.hidden.bypass import bypassed
from miprun.hidden.runner import as_source
from miprun.pipeline.options import PruneOptions


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits.double()


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_the_tuned_fold_is_the_map_applied_at_run_time(family):
    seed = secrets.randbelow(2**31)
    model = tiny_model(family, num_blocks=6, seed=seed % 97, dtype=torch.float64)
    ids = calibration_ids(10, 12, seed=seed % 89)
    healing = heal_cuts(model, [2, 3], ids[:8], options=HealOptions(heal="linear"), fold=False)
    closed = {b: T.clone() for b, T in healing.maps.items()}
    report = tune_maps(model, [2, 3], healing, ids[:8], ids[8:], steps=6, lr=0.05, batch_size=4, eval_every=2)
    tuned = {b: torch.nn.Parameter(T.clone()) for b, T in report_maps(healing, closed, report).items()}
    source = as_source(model)
    fresh = calibration_ids(3, 12, seed=seed % 83)
    with _pruned(source, [2, 3], healing.site, tuned):
        applied = _logits(model, fresh)
    folded = copy.deepcopy(model)
    healing.fold(folded)
    tol = 1e-9 if family != "gemma3_text" else 1e-5  # Gemma's norms compute in float32 whatever the model's dtype
    with bypassed(folded, [2, 3]):
        torch.testing.assert_close(_logits(folded, fresh), applied, rtol=tol, atol=tol, msg=str(seed))


def report_maps(healing, closed, report):
    """The maps tuning left: the tuned ones when kept, else the closed form unchanged."""
    if not report["kept"]:
        assert all(torch.equal(healing.maps[b], closed[b]) for b in closed)
    return healing.maps


def test_maps_that_do_not_beat_the_closed_form_are_not_kept():
    model = tiny_model("llama", num_blocks=6, seed=4, dtype=torch.float64)
    ids = calibration_ids(10, 12, seed=5)
    healing = heal_cuts(model, [2, 3], ids[:8], options=HealOptions(heal="linear"), fold=False)
    closed = {b: T.clone() for b, T in healing.maps.items()}
    report = tune_maps(model, [2, 3], healing, ids[:8], ids[8:], steps=4, lr=50.0, batch_size=4, eval_every=1)
    assert report["kept"] is False and report["best_step"] == 0 and "did not beat" in report["reason"]
    assert all(c["held_out_kl"] > report["closed_form_held_out_kl"] for c in report["curve"])
    assert all(torch.equal(healing.maps[b], closed[b]) for b in closed)
    assert set(healing.maps) == set(closed)


@requires_stories
def test_tuning_lowers_the_held_back_kl_of_a_real_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from miprun.calibration.windows import load_calibration
    from miprun.measure import Measurer
    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    tok = AutoTokenizer.from_pretrained(STORIES)
    ids = load_calibration(data_file("text/tinystories/TinyStories-valid.head45.txt"), tok, n_samples=24,
                           seq_len=64, seed=0)
    healing = heal_cuts(model, [2, 3], ids[:18], ids[18:], options=HealOptions(heal="linear"), fold=False)
    report = tune_maps(model, [2, 3], healing, ids[:18], ids[18:], steps=24, lr=0.01, batch_size=6, eval_every=6)
    assert report["kept"] and report["held_out_kl"] < report["closed_form_held_out_kl"] * 0.95
    # what the report says is what the measurer measures of the kept maps
    measured = Measurer(model, ids[18:]).measure([healing.candidate([2, 3])])[0]
    assert measured.kl == pytest.approx(report["held_out_kl"], rel=1e-5)
    curve = [c["train_kl"] for c in report["curve"]]
    assert curve[-1] < curve[0]


def test_tuning_is_refused_where_it_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="--offload"):
        PruneOptions.from_flat(num_remove=2, heal="linear", heal_tune=5, offload=True, out_dir=tmp_path / "o")
    with pytest.raises(ValueError, match="choose a heal"):
        HealOptions(heal_tune=5)
    for bad in (dict(heal_tune=-1), dict(heal_tune=1.5), dict(heal_tune_lr=0.0), dict(heal_tune_lr=float("inf"))):
        with pytest.raises(ValueError):
            HealOptions(heal="linear", **bad)
    assert HealOptions().tune_steps == 0 and HealOptions(heal="linear", heal_tune=7).tune_steps == 7


def test_auto_tunes_a_linear_heal_only_where_the_weights_run_backward(tmp_path):
    from miprun.heal.options import DEFAULT_TUNE_STEPS
    linear, scale = HealOptions(heal="linear"), HealOptions(heal="scale")
    assert DEFAULT_TUNE_STEPS > 0
    assert linear.tune_steps_for(streamed=False) == DEFAULT_TUNE_STEPS and linear.tune_steps_for(streamed=True) == 0
    assert scale.tune_steps_for(streamed=False) == 0 and HealOptions().tune_steps_for(streamed=False) == 0
    assert HealOptions(heal="scale", heal_tune=3).tune_steps_for(streamed=False) == 3
    assert linear.tune_asked == 0 and HealOptions(heal="linear", heal_tune=3).tune_asked == 3
    # auto with --offload is not refused: the closed form alone
    options = PruneOptions.from_flat(num_remove=2, heal="linear", offload=True, out_dir=tmp_path / "o")
    assert options.heal.tune_steps_for(streamed=True) == 0


def test_a_streamed_linear_heal_by_default_keeps_the_closed_form_and_says_why(tmp_path):
    from tiny_models import save_sharded

    from miprun.pipeline.prune import prune
    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=5, seed=6), tmp_path / "m")
    result = prune(str(folder), calibration_ids(12, 32, seed=5), num_remove=2, heal="linear", offload=True,
                   out_dir=tmp_path / "o", device="cpu", plots=False, progress=False, held_back=0.25, batch_size=3)
    tune = result.report["heal"]["tune"]
    assert tune["steps"] == 0 and not tune["kept"] and "--offload" in tune["reason"]


def test_tuning_a_model_auto_would_stream_is_refused_before_any_work(tmp_path, monkeypatch):
    from tiny_models import save_sharded

    import miprun.pipeline.prune as pipeline
    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=5), tmp_path / "m")
    monkeypatch.setattr(pipeline, "resolve_offload", lambda *a, **k: True)  # as if it did not fit in memory

    def no_scoring(*a, **k):
        raise AssertionError("refused after scoring started")

    monkeypatch.setattr(pipeline, "score_tokens", no_scoring)
    with pytest.raises(ValueError, match="would stream"):
        pipeline.prune(str(folder), calibration_ids(6, 16), num_remove=2, heal="linear", heal_tune=3,
                       offload="auto", out_dir=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_a_tuned_heal_with_a_device_map_writes_the_in_memory_tuned_heal(tmp_path, monkeypatch):
    """The same steps on a model placed by accelerate: the same curve, kept or not alike, the same tensors written."""
    from safetensors.torch import load_file
    from tiny_models import save_sharded

    from miprun.pipeline import prune as pipeline
    from miprun.pipeline.prune import prune
    from miprun.selection.plan import Plan
    # a plan with a cut to heal whatever the random windows score (blocks 2-3 after block 1)
    monkeypatch.setattr(pipeline, "select", lambda table, n, **kw: Plan(removed=[2, 3], num_blocks=5,
                                                                        selector="optimal"))
    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=5, seed=6), tmp_path / "m")
    ids = calibration_ids(12, 32, seed=5)  # windows whose closed-form heal is kept, so there are maps to tune
    settings = dict(num_remove=2, selector="optimal", heal="linear", heal_tune=4, heal_tune_lr=0.02, plots=False,
                    progress=False, verify=0, held_back=0.25, batch_size=3)
    mapped = prune(str(folder), ids, out_dir=tmp_path / "d", device_map="auto", **settings)
    memory = prune(str(folder), ids, out_dir=tmp_path / "i", device="cpu", **settings)
    assert mapped.plan.removed == memory.plan.removed
    a, b = mapped.report["heal"]["tune"], memory.report["heal"]["tune"]
    assert a["kept"] == b["kept"] and a["best_step"] == b["best_step"]
    assert [c["held_out_kl"] for c in a["curve"]] == pytest.approx([c["held_out_kl"] for c in b["curve"]], rel=1e-5)
    assert len(a["curve"]) == 4 and a["closed_form_held_out_kl"] > 0

    def tensors(out):
        return {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(f).items()}

    s, i = tensors(tmp_path / "d"), tensors(tmp_path / "i")
    assert set(s) == set(i)
    for key, value in s.items():
        torch.testing.assert_close(value, i[key], rtol=1e-5, atol=1e-6, msg=key)
