"""``prune --heal``: the healed checkpoint, its report, and the inputs refused before any work."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from support import STORIES, data_file, requires_native, requires_stories

from miprun.cli import main as cli
from miprun.pipeline.options import PruneOptions
from miprun.pipeline.prune import prune
from tiny_models import calibration_ids, tiny_model

pytestmark = requires_native


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits.double()


def test_a_healed_prune_saves_what_it_measured_and_reloads(tmp_path):
    model = tiny_model("llama", num_blocks=6, seed=2)
    ids = calibration_ids(16, 12, seed=3)
    # verify off: optimal's own plan, which leaves a cut this seed's heal improves
    plain = prune(tiny_model("llama", num_blocks=6, seed=2), ids, num_remove=2, selector="optimal", plots=False,
                  progress=False, verify=0, held_back=0.125)
    result = prune(model, ids, num_remove=2, selector="optimal", heal="linear", out_dir=tmp_path / "out",
                   plots=False, progress=False, verify=0, held_back=0.125)
    assert result.plan.removed == plain.plan.removed
    heal = json.loads((tmp_path / "out" / "report.json").read_text())["heal"]
    assert heal == json.loads(json.dumps(result.report["heal"]))
    assert heal["method"] == "linear" and heal["fit"] == "sequential" and "heal" in result.timings
    assert heal["cuts"][0]["fit"]["tokens"] == 14 * 12 and heal["cuts"][0]["held_out"]["tokens"] == 2 * 12
    assert heal["cuts"][0]["fit"]["relative_residual"] < heal["cuts"][0]["fit"]["unhealed_relative_residual"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["settings"]["options"]["heal"]["heal"] == \
        "linear"
    fresh = calibration_ids(3, 12, seed=8)
    reloaded = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(_logits(reloaded, fresh), _logits(result.model, fresh), rtol=1e-5, atol=1e-5)
    assert (_logits(result.model, fresh) - _logits(plain.model, fresh)).abs().max() > 1e-3


@pytest.mark.parametrize("family, refit", [("llama", 0), ("gpt2", 0), ("gemma3_text", 0), ("llama", 2)])
@pytest.mark.parametrize("placement", [dict(offload=True), dict(device_map="auto")])
def test_a_streamed_or_mapped_heal_writes_the_in_memory_heal(family, refit, placement, tmp_path, monkeypatch):
    """Weights read from the shards one block at a time, or placed by a device map: the maps are folded into the
    tensors as the checkpoint is rewritten, the same tensors as the heal of the model in memory."""
    from safetensors.torch import load_file
    from tiny_models import save_sharded

    from miprun.pipeline import prune as pipeline
    from miprun.selection.plan import Plan
    if refit:  # a plan that leaves a kept block after its cut: blocks 2-3 removed after block 1, block 4 kept
        monkeypatch.setattr(pipeline, "select", lambda table, n, **kw: Plan(removed=[2, 3], num_blocks=5,
                                                                            selector="optimal"))

    folder = save_sharded(tiny_model(family, preset="stream", num_blocks=5, seed=6), tmp_path / "m")
    ids = calibration_ids(10, 64, seed=7)
    # the plan from the scores: one the heal improves; the closed form alone (streamed weights are not tuned,
    # the tuned heal in memory and mapped is tests/heal/test_tune.py's)
    settings = dict(num_remove=2, selector="optimal", heal="linear", plots=False, progress=False, verify=0,
                    heal_refit=refit, held_back=0.125, heal_tune=0)
    device = {} if "device_map" in placement else dict(device="cpu")
    streamed = prune(str(folder), ids, out_dir=tmp_path / "s", **placement, **device, **settings)
    in_memory = prune(str(folder), ids, out_dir=tmp_path / "i", device="cpu", **settings)
    assert streamed.plan.removed == in_memory.plan.removed
    assert [c["fit"] for c in streamed.report["heal"]["cuts"]] == [c["fit"] for c in in_memory.report["heal"]["cuts"]]
    healed = [c for c in in_memory.report["heal"]["cuts"] if c["method"]]
    assert healed, "the plan must leave a cut that can be healed"

    def tensors(folder):
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    s, i = tensors(tmp_path / "s"), tensors(tmp_path / "i")
    assert set(s) == set(i)
    for key, value in s.items():
        torch.testing.assert_close(value, i[key], rtol=1e-6, atol=1e-7, msg=key)
    # the first cut's block keeps its index: its folded weight was written, not the original
    path = {"llama": "model.layers.{}.mlp.down_proj.weight", "gpt2": "transformer.h.{}.mlp.c_proj.weight",
            "gemma3_text": "model.layers.{}.post_feedforward_layernorm.weight"}[family]
    key = path.format(healed[0]["after_block"])
    assert not torch.allclose(s[key], tensors(folder)[key])
    refits = in_memory.report["heal"]["refits"]
    gone = set(in_memory.plan.removed)
    assert all(r["block"] not in gone and r["block"] + 1 not in gone for r in refits)
    assert [r["block"] for r in refits] == [4][:refit], (in_memory.plan.removed, refits)
    assert [r["fit"] for r in streamed.report["heal"]["refits"]] == [r["fit"] for r in refits]
    kept = in_memory.plan.kept
    for r in refits:  # each refitted block's folded weight was written too, under the block's new index
        assert r["method"] == "linear" and not torch.allclose(s[path.format(kept.index(r["block"]))],
                                                              tensors(folder)[path.format(r["block"])])


def test_heal_with_a_format_it_cannot_fold_into_is_refused():
    with pytest.raises(ValueError, match="format='hf'"):
        PruneOptions.from_flat(num_remove=2, heal="linear", format="gguf")


def test_heal_options_round_trip_through_the_report():
    options = PruneOptions.from_flat(num_remove=2, heal="scale", heal_fit="dense", heal_ridge=0.5)
    again = PruneOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    assert again == options and again.heal.heal_ridge == 0.5
    assert PruneOptions.from_dict({"selection": {"num_remove": 2}}).heal.heal == "none"  # reports without heal


@requires_stories
@pytest.mark.parametrize("argv, phrase", [
    (["--heal", "full"], "invalid choice"),
    (["--heal", "linear", "--heal-ridge", "-1"], "must be a finite number >= 0"),
    (["--heal", "linear", "--heal-fit", "later"], "invalid choice"),
    (["--heal", "linear", "--heal-fit", "dense", "--heal-refit", "1"], "heal_fit='sequential'"),
    (["--heal-refit", "2"], "choose a heal"),
    (["--heal", "linear", "--heal-refit", "-1"], "heal_refit must be an int >= 0"),
])
def test_bad_heal_arguments_exit_2_before_any_work(tmp_path, capsys, argv, phrase):
    calib = data_file("text/tinystories/TinyStories-valid.head45.txt")
    code = cli.main(["prune", str(STORIES), "--calib", str(calib), "--num-remove", "1", "--out",
                     str(tmp_path / "o"), *argv])
    assert code == 2 and phrase in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@requires_stories
def test_cli_heals_stories_and_says_so(tmp_path, capsys):
    calib = data_file("text/tinystories/TinyStories-valid.head45.txt")
    code = cli.main(["prune", str(STORIES), "--calib", str(calib), "--n-samples", "8", "--seq-len", "64",
                     "--num-remove", "2", "--selector", "optimal", "--heal", "linear", "--out", str(tmp_path / "o"),
                     "--no-plots", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    cuts = report["heal"]["cuts"]
    # a cut after a kept block is healed with the map, or left unhealed with a measured reason (the held-out check)
    assert cuts and all(c["method"] == "linear" or (c["method"] is None and "held-out" in c["reason"])
                        for c in cuts if c["after_block"] is not None), cuts
    assert report["heal"]["refits"] == []  # none asked for
    for cut in cuts:
        first, last = cut["removed"]
        if cut["method"] is None:
            assert f"{first}-{last} left unhealed" in out or f"block {first} left unhealed" in out
        else:
            assert f"linear map after block {cut['after_block']}: relative residual" in out


@requires_stories
def test_cli_refits_the_blocks_after_the_cut_and_says_so(tmp_path, capsys):
    calib = data_file("text/tinystories/TinyStories-valid.head45.txt")
    code = cli.main(["prune", str(STORIES), "--calib", str(calib), "--n-samples", "8", "--seq-len", "64",
                     "--num-remove", "1", "--selector", "greedy", "--heal", "linear", "--heal-refit", "1",
                     "--verify", "0", "--out", str(tmp_path / "o"), "--no-plots", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    (removed,) = report["pruned_blocks"]
    refits = report["heal"]["refits"]
    assert report["settings"]["options"]["heal"]["heal_refit"] == 1
    # the one kept block after the run, unless the run ends the model
    assert [r["block"] for r in refits] == ([removed + 1] if removed + 1 < 5 else [])
    for r in refits:
        assert r["after_cut"] == [removed, removed]
        said = f"heal: block {r['block']} refitted (linear)" if r["method"] else f"heal: block {r['block']} not refitted"
        assert said in out
