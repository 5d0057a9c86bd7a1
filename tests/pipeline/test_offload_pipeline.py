"""prune(offload=True) end to end: the same table, plan and checkpoint as the in-memory path."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForCausalLM

import pytest

from miprun.pipeline.prune import prune
from miprun.scoring.score import score_blocks
from tiny_models import STREAM_FAMILIES, calibration_ids, save_sharded, tiny_model


def test_prune_offload_equals_in_memory(tmp_path):
    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=8), tmp_path / "m")
    ids = calibration_ids(6, 16, seed=6)
    # verify=0: the paper's path, every window scored, the same table bit for bit
    common = dict(num_remove=3, dtype=torch.float32, batch_size=4, device="cpu", plots=False, progress=False,
                  verify=0)
    streamed = prune(str(folder), ids, offload=True, out_dir=tmp_path / "streamed", **common)
    loaded = prune(str(folder), ids, offload=False, out_dir=tmp_path / "loaded", **common)
    np.testing.assert_array_equal(streamed.table.values, loaded.table.values)
    assert streamed.plan.removed == loaded.plan.removed
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "streamed").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "loaded").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_score_blocks_offload_every_estimator(tmp_path):
    folder = save_sharded(tiny_model("qwen2", preset="stream"), tmp_path / "m")
    ids = calibration_ids(4, 12, seed=7)
    for estimator, reduction in (("hist", "per_dim"), ("ksg", "pooled"), ("cosine", "pooled")):
        kw = dict(estimator=estimator, reduction=reduction, max_run=2, progress=False, device="cpu")
        streamed = score_blocks(str(folder), ids, offload=True, **kw)
        loaded = score_blocks(str(folder), ids, **kw)
        np.testing.assert_array_equal(streamed.values, loaded.values, err_msg=estimator)


def _measured(result) -> list[tuple]:
    v = result.report["verify"]
    return [(c["removed"], c.get("screened"), c.get("value"), c.get("loss")) for c in v["candidates"]]


@pytest.mark.parametrize("family", STREAM_FAMILIES)
def test_the_default_plan_is_the_same_in_memory_streamed_and_mapped(family, tmp_path):
    """verify, refine and the plan check measure the same candidates wherever the weights are."""
    folder = save_sharded(tiny_model(family, preset="stream", num_blocks=6, seed=3), tmp_path / "m")
    ids = calibration_ids(8, 16, seed=4)
    common = dict(num_remove=2, batch_size=4, plots=False, progress=False)
    runs = {"memory": prune(str(folder), ids, device="cpu", out_dir=tmp_path / "a", **common),
            "offload": prune(str(folder), ids, device="cpu", offload=True, out_dir=tmp_path / "b", **common),
            "map": prune(str(folder), ids, device_map="auto", out_dir=tmp_path / "c", **common)}
    want = runs["memory"]
    assert want.report["settings"]["options"]["selection"]["verify"] == 2 and "refine" in want.report["verify"]
    for name, got in runs.items():
        assert got.plan.removed == want.plan.removed, name
        for g, w in zip(_measured(got), _measured(want)):
            assert g[0] == w[0] and [x is None for x in g] == [x is None for x in w], name
            for x, y in zip(g[1:], w[1:]):
                if y is not None:  # float32 sums of the same windows, in other batches
                    assert x == pytest.approx(y, rel=1e-5, abs=1e-9), (name, g, w)
        check = got.report["plan_check"]
        assert check["pruned_perplexity"] == pytest.approx(want.report["plan_check"]["pruned_perplexity"], rel=1e-5)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    for other in ("b", "c"):
        b = AutoModelForCausalLM.from_pretrained(tmp_path / other).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sleb_streamed_reads_the_weights_once_per_step(tmp_path):
    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=6, seed=5), tmp_path / "m")
    ids = calibration_ids(8, 16, seed=6)
    common = dict(num_remove=3, selector="sleb", batch_size=4, plots=False, progress=False, device="cpu")
    streamed = prune(str(folder), ids, offload=True, out_dir=tmp_path / "s", **common)
    loaded = prune(str(folder), ids, out_dir=tmp_path / "l", **common)
    assert streamed.plan.removed == loaded.plan.removed
    # one sweep per step: every block read once for the step's candidates (the plan check reads the cache)
    assert streamed.report["measure"]["sweeps"] == 3 and streamed.report["sleb"]["plans_measured"] == 6 + 5 + 4
