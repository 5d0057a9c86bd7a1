"""Measured selection across processes: each measures its share of the held-back windows, the sums are
all-reduced, and every process chooses the plan one process chooses."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from measure_dp_worker import SETTINGS, worker
from support import free_port, requires_native, run_processes
from tiny_models import calibration_ids, save_sharded, tiny_model

WORLD_SIZE = 2
DEADLINE_S = 300


@pytest.mark.slow
@requires_native
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available")
def test_two_processes_measure_and_choose_what_one_process_does(tmp_path):
    from miprun.pipeline.prune import prune

    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=6, seed=4), tmp_path / "m")
    ids = calibration_ids(12, 32, seed=5)
    run_processes(worker, (WORLD_SIZE, free_port(), str(folder), ids, str(tmp_path)), WORLD_SIZE, DEADLINE_S)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    single = prune(str(folder), ids, progress=False, out_dir=tmp_path / "single", **SETTINGS)
    want = single.report["verify"]
    assert want["candidates"] and single.report["measure"]["windows"] == 3
    for res in ranks:
        assert res["removed"] == single.plan.removed
        got = res["verify"]
        assert [c["removed"] for c in got["candidates"]] == [c["removed"] for c in want["candidates"]]
        for g, w in zip(got["candidates"], want["candidates"]):
            for key in ("value", "screened", "loss", "kl"):
                assert (key in g) == (key in w)
                if key in w:  # float32 sums in another order
                    assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-9), (key, g, w)
        assert res["plan_check"]["pruned_perplexity"] == pytest.approx(
            single.report["plan_check"]["pruned_perplexity"], rel=1e-5)
