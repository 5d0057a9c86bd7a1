"""prune(offload=True) end to end: the same table, plan and checkpoint as the in-memory path."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from miprun.pipeline.prune import prune
from miprun.scoring.score import score_blocks
from tiny_models import calibration_ids, save_sharded, tiny_model


def test_prune_offload_equals_in_memory(tmp_path):
    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=8), tmp_path / "m")
    ids = calibration_ids(6, 16, seed=6)
    # verify=0: the streamed path cannot measure losses, so both paths score every window
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
