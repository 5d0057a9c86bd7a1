"""Data-parallel healing: two gloo processes fold the maps one process folds."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from heal_dp_worker import SETTINGS, worker
from support import free_port, run_processes
from tiny_models import calibration_ids, save_sharded, tiny_model

WORLD_SIZE = 2
DEADLINE_S = 300


@pytest.mark.slow
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available")
def test_two_processes_fold_the_single_process_maps(tmp_path):
    from miprun.pipeline.prune import prune

    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=5, seed=2), tmp_path / "m")
    # 8 fitted windows in shards of 4, the 9th held out on rank 0; seeds whose plan ([0, 4]) leaves a cut whose map
    # beats the unhealed cut on that window (random weights and tokens give most maps nothing to generalise) and a
    # kept block to refit after the run at block 0, so there are folds to compare
    ids = calibration_ids(9, 64, seed=9)
    run_processes(worker, (WORLD_SIZE, free_port(), str(folder), ids, str(tmp_path)), WORLD_SIZE, DEADLINE_S)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]

    single = prune(str(folder), ids, progress=False, **SETTINGS)
    healed = [c for c in single.report["heal"]["cuts"] if c["method"] == "linear"]
    assert healed, "the plan must leave a cut that can be healed"
    assert healed[0]["fit"]["tokens"] == 8 * 64
    expect = single.model.state_dict()
    original = tiny_model("llama", preset="stream", num_blocks=5, seed=2).state_dict()
    refitted = [r["block"] for r in single.report["heal"]["refits"] if r["method"] == "linear"]
    assert refitted, "the plan must leave a block to refit"
    for block in [healed[0]["after_block"]] + refitted:  # folded, under the block's index after surgery
        key = "model.layers.{}.mlp.down_proj.weight"
        assert not torch.allclose(expect[key.format(single.plan.kept.index(block))], original[key.format(block)])
    for res in ranks:
        assert res["removed"] == single.plan.removed
        for got, want in zip(res["heal"]["cuts"], single.report["heal"]["cuts"]):
            assert got["method"] == want["method"]
            if not want["fit"]:  # the run at block 0: nothing fitted
                continue
            assert got["fit"]["tokens"] == want["fit"]["tokens"]
            assert got["held_out"]["tokens"] == want["held_out"]["tokens"] == 64
            if want["method"]:
                assert got["fit"]["relative_residual"] == pytest.approx(want["fit"]["relative_residual"], rel=1e-9)
        assert len(res["heal"]["refits"]) == len(single.report["heal"]["refits"])
        for got, want in zip(res["heal"]["refits"], single.report["heal"]["refits"]):
            assert got["block"] == want["block"] and got["method"] == want["method"]
            if want["method"]:
                assert got["fit"]["relative_residual"] == pytest.approx(want["fit"]["relative_residual"], rel=1e-9)
        for key, value in expect.items():  # float sums in another order: float32 rounding of the folded weights
            torch.testing.assert_close(res["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available")
def test_two_processes_tune_the_single_process_maps(tmp_path):
    from miprun.pipeline.prune import prune

    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=5, seed=2), tmp_path / "m")
    ids = calibration_ids(9, 64, seed=9)
    # 8 fitted windows, steps of 3 drawn from all of them: each process computes the part in its share
    settings = {**SETTINGS, "heal_refit": 0, "heal_tune": 4, "heal_tune_lr": 0.05, "batch_size": 3}
    run_processes(worker, (WORLD_SIZE, free_port(), str(folder), ids, str(tmp_path), settings), WORLD_SIZE,
                  DEADLINE_S)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    single = prune(str(folder), ids, progress=False, **settings)
    tune = single.report["heal"]["tune"]
    assert tune["steps"] == 4 and len(tune["curve"]) >= 1
    expect = single.model.state_dict()
    for res in ranks:
        got = res["heal"]["tune"]
        assert got["kept"] == tune["kept"] and got["best_step"] == tune["best_step"]
        for g, w in zip(got["curve"], tune["curve"]):
            assert g["train_kl"] == pytest.approx(w["train_kl"], rel=1e-5)
            assert g["held_out_kl"] == pytest.approx(w["held_out_kl"], rel=1e-5)
        for key, value in expect.items():
            torch.testing.assert_close(res["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)
