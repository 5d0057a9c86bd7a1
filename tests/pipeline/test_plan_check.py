"""A plan that breaks the model is noticed before anything is written."""

from __future__ import annotations

import json
import math

import pytest
import torch
from miprun.cli import main as cli
from miprun.evaluate.calibration_loss import bypassed, mean_next_token_loss
from miprun.pipeline.prune import BrokenPlanError, prune
from support import STORIES, data_file, requires_native, requires_stories
from tiny_models import calibration_ids, tiny_model

pytestmark = requires_native


def _perplexity(model, ids, removed=()):
    with bypassed(model, removed):
        return math.exp(mean_next_token_loss(model, ids)[0])


def test_the_check_measures_the_plan_on_the_held_back_windows(tmp_path):
    model = tiny_model("llama", num_blocks=6, seed=1)
    ids = calibration_ids(16, 12, seed=2)
    reference = tiny_model("llama", num_blocks=6, seed=1)
    result = prune(model, ids, num_remove=2, selector="optimal", out_dir=tmp_path / "o", plots=False,
                   progress=False, max_ppl_ratio=1e6)
    check = json.loads((tmp_path / "o" / "report.json").read_text())["plan_check"]
    assert check["windows"] == 4  # the last quarter, held back
    # float32 sums in another order than one full forward pass: equal to float32 rounding
    assert check["dense_perplexity"] == pytest.approx(_perplexity(reference, ids[12:]), rel=1e-6)
    assert check["pruned_perplexity"] == pytest.approx(_perplexity(reference, ids[12:], result.plan.removed),
                                                       rel=1e-6)
    assert check["ratio"] == pytest.approx(check["pruned_perplexity"] / check["dense_perplexity"], rel=1e-9)


@requires_stories
def test_a_broken_plan_is_refused_and_nothing_is_written(tmp_path):
    calib = data_file("text/tinystories/TinyStories-valid.head45.txt")
    settings = dict(num_remove=2, selector="optimal", n_samples=8, seq_len=64, plots=False, progress=False)
    free = prune(STORIES, calib, max_ppl_ratio=1e9, **settings)
    cost = free.report["plan_check"]["ratio"]  # checked against a direct measurement above
    assert cost > 1.01
    with pytest.raises(BrokenPlanError, match=r"over max_ppl_ratio .*nothing was written"):
        prune(STORIES, calib, max_ppl_ratio=1.0 + (cost - 1.0) / 2, out_dir=tmp_path / "refused", **settings)
    assert list(tmp_path.glob("refused*")) == []
    result = prune(STORIES, calib, max_ppl_ratio=cost * 1.01, out_dir=tmp_path / "kept", **settings)
    assert result.plan.removed == free.plan.removed
    assert result.report["plan_check"]["ratio"] == pytest.approx(cost, rel=1e-9)
    assert (tmp_path / "kept" / "report.json").exists()


@requires_stories
def test_cli_refuses_a_broken_plan_with_exit_2(tmp_path, capsys):
    calib = data_file("text/tinystories/TinyStories-valid.head45.txt")
    code = cli.main(["prune", str(STORIES), "--calib", str(calib), "--n-samples", "8", "--seq-len", "64",
                     "--num-remove", "2", "--max-ppl-ratio", "1.0001", "--out", str(tmp_path / "o"), "--no-plots",
                     "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "breaks the model" in err and "nothing was written" in err
    assert not (tmp_path / "o").exists()
    code = cli.main(["prune", str(STORIES), "--calib", str(calib), "--num-remove", "1", "--max-ppl-ratio", "0.5",
                     "--out", str(tmp_path / "p")])
    assert code == 2 and "must be >= 1" in capsys.readouterr().err


@requires_stories
def test_a_refused_healed_plan_gives_the_callers_model_its_weights_back():
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(STORIES).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(STORIES)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calib = data_file("text/tinystories/TinyStories-valid.head45.txt")
    with pytest.raises(BrokenPlanError):
        prune(model, calib, tokenizer=tokenizer, num_remove=2, selector="optimal", heal="linear",
              max_ppl_ratio=1.0001, n_samples=16, seq_len=64, plots=False, progress=False)
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
