"""prune() end to end on the real stories260K model: every selector, 1 and 2 blocks, saved, reloaded, checked."""

from __future__ import annotations

import json

import pytest
import torch
from support import STORIES, data_file, requires_native, requires_stories

from miprun.pipeline.prune import prune
from miprun.selection.options import SelectionOptions
from miprun.selection.select import SELECTORS

pytestmark = [requires_stories, requires_native]  # the selectors run in the native core

N_SAMPLES, SEQ_LEN = 4, 64


@pytest.fixture(scope="module")
def original():
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(STORIES).eval()


@pytest.fixture(scope="module")
def calib():
    return data_file("text/tinystories/TinyStories-valid.head45.txt")


def _identity_logits(model, removed, ids):
    """Logits of the original model with the removed blocks replaced by the identity."""
    hooks = [model.model.layers[b].register_forward_hook(lambda mod, args, out: args[0]) for b in removed]
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("num_blocks", [1, 2])
@pytest.mark.parametrize("selector", SELECTORS)
def test_prune_save_reload_generate(selector, num_blocks, original, calib, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out = tmp_path / "pruned"
    result = prune(STORIES, calib, num_remove=num_blocks, selector=selector, out_dir=out, n_samples=N_SAMPLES,
                   seq_len=SEQ_LEN, progress=False, plots=selector == "fast_block_select")
    removed = result.plan.removed
    assert len(removed) == num_blocks and all(0 <= b < 5 for b in removed)
    assert result.table.estimator == {"shortgpt": "cosine", "gromov": "angular"}.get(selector, "hist")
    if selector == "gromov":
        assert removed == list(range(removed[0], removed[0] + num_blocks))  # one contiguous run

    report = json.loads((out / "report.json").read_text())
    assert report["pruned_blocks"] == removed
    assert report["kept_blocks"] == [b for b in range(5) if b not in removed]
    assert report["selector"] == selector and report["num_blocks_after"] == 5 - num_blocks
    assert set(report["timings"]) >= {"calibrate", "load", "score", "select", "surgery", "save"}
    assert report["timings"]["save"] > 0
    assert report["settings"]["calibration"]["tokens"] == N_SAMPLES * SEQ_LEN
    assert (out / "score_table.png").exists() == (selector == "fast_block_select")

    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.num_hidden_layers == 5 - num_blocks
    orig_sd = original.state_dict()
    for new, old in enumerate(report["kept_blocks"]):
        for key, value in reloaded.model.layers[new].state_dict().items():
            assert torch.equal(value, orig_sd[f"model.layers.{old}.{key}"]), (new, old, key)
    assert torch.equal(reloaded.model.embed_tokens.weight, original.model.embed_tokens.weight)

    ids = torch.randint(3, 512, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = reloaded(ids).logits
    torch.testing.assert_close(got, _identity_logits(original, removed, ids), rtol=1e-5, atol=1e-5)
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok("Once upon a time", return_tensors="pt")
    gen = reloaded.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert gen.shape[1] == prompt["input_ids"].shape[1] + 6


def test_in_memory_model_and_token_ids(original, tmp_path):
    """A loaded model and token ids work too; the pruned model comes back in memory; nothing saved without out_dir."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    ids = torch.randint(3, 512, (4, 32), generator=torch.Generator().manual_seed(1))
    result = prune(model, ids, ratio=0.4, selector="optimal", progress=False)
    assert len(result.plan.removed) == 2 and result.out_dir is None
    assert result.model is model and len(model.model.layers) == 3
    assert result.report["pruned_blocks"] == result.plan.removed
    assert result.table.max_run == 2 and result.table.settings["calibration"]["source"] == "token ids"


def test_validation_happens_before_any_work(tmp_path, calib):
    out = tmp_path / "o"
    with pytest.raises(ValueError, match="num_remove=5 but the model has 5 blocks"):
        prune(STORIES, calib, num_remove=5, out_dir=out)
    with pytest.raises(ValueError, match="exactly one"):
        prune(STORIES, calib, num_remove=1, ratio=0.2, out_dir=out)
    with pytest.raises(ValueError, match="reads 'angular'"):
        prune(STORIES, calib, num_remove=1, selector="gromov", estimator="ksg", out_dir=out)
    with pytest.raises(ValueError, match="selector must be"):
        prune(STORIES, calib, num_remove=1, selector="random", out_dir=out)
    with pytest.raises(ValueError, match="input model folder"):
        prune(STORIES, calib, num_remove=1, out_dir=STORIES / "inside")
    with pytest.raises(ValueError, match="vocabulary of 512"):
        prune(STORIES, torch.full((2, 8), 600, dtype=torch.long), num_remove=1, out_dir=out)
    out.mkdir()
    with pytest.raises(ValueError, match="already exists"):
        prune(STORIES, calib, num_remove=1, out_dir=out)
    assert list(out.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["o"]


def test_estimator_and_count_rules():
    def est(selector, estimator):
        return SelectionOptions(num_remove=1, selector=selector).estimator_for(estimator)
    assert est("fast_block_select", None) == "hist"
    assert est("optimal", "ksg") == "ksg"
    assert est("shortgpt", None) == "cosine" and est("gromov", "angular") == "angular"
    with pytest.raises(ValueError, match="distance"):
        est("greedy", "cosine")
    assert SelectionOptions(ratio=0.25).count(32) == 8
    with pytest.raises(ValueError, match="rounds to 0"):
        SelectionOptions(ratio=0.05).count(5)
    with pytest.raises(ValueError, match="fraction"):
        SelectionOptions(ratio=1.5)


def test_offload_gives_the_same_table_plan_and_checkpoint(calib, tmp_path):
    from safetensors.torch import load_file
    kw = dict(num_remove=2, n_samples=N_SAMPLES, seq_len=SEQ_LEN, progress=False, plots=False, verify=0)
    memory = prune(STORIES, calib, out_dir=tmp_path / "memory", **kw)
    streamed = prune(STORIES, calib, out_dir=tmp_path / "streamed", offload=True, **kw)
    assert streamed.model is None and streamed.plan.removed == memory.plan.removed
    np_equal = (streamed.table.values == memory.table.values) | (streamed.table.values != streamed.table.values)
    assert np_equal.all()  # identical scores (NaN where runs pass the last block)
    a = load_file(tmp_path / "memory" / "model.safetensors")
    b = load_file(tmp_path / "streamed" / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    report = json.loads((tmp_path / "streamed" / "report.json").read_text())
    assert report["pruned_blocks"] == memory.plan.removed and report["settings"]["options"]["execution"]["offload"] is True
    assert report["estimator"]["settings"]["offload"] is True
