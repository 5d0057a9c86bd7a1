"""Data-parallel calibration: two gloo processes give the single-process score table and plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from miprun.scoring.distributed import shard_calibration
from scale_dp_worker import CASES, MAX_RUN, worker
from support import free_port, run_processes
from tiny_models import calibration_ids, save_sharded, tiny_model

WORLD_SIZE = 2
DEADLINE_S = 300

requires_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                   reason="torch.distributed with the gloo backend is not available")


def test_shards_are_contiguous_and_cover_every_sample():
    ids = calibration_ids(7, 10)
    shards = [shard_calibration(ids, r, 3, skip_first=2) for r in range(3)]
    assert torch.equal(torch.cat([s.input_ids for s in shards]), ids)
    assert [s.input_ids.shape[0] for s in shards] == [2, 2, 3]
    assert [s.token_offset for s in shards] == [0, 2 * 8, 4 * 8]  # 8 scored positions per sample
    assert {s.total_tokens for s in shards} == {7 * 8}


def test_more_processes_than_samples_is_refused():
    with pytest.raises(ValueError, match="3 calibration samples cannot be shared by 4 processes"):
        shard_calibration(calibration_ids(3, 10), 0, 4)


@pytest.mark.slow
@requires_gloo
def test_two_processes_give_the_single_process_table_and_plan(tmp_path):
    from miprun.scoring.score import score_blocks
    from miprun.selection.select import select

    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=5), tmp_path / "m")
    ids = calibration_ids(5, 12, seed=4)  # 5 samples: shards of 2 and 3 (unequal on purpose)
    run_processes(worker, (WORLD_SIZE, free_port(), str(folder), ids, str(tmp_path)), WORLD_SIZE, DEADLINE_S)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]

    # Collectives: every rank gets the same rank-ordered rows / sums, bit for bit.
    g0 = torch.Generator().manual_seed(100)
    expect_bf16 = torch.randn(3, 2, 3, generator=g0).to(torch.bfloat16)
    for res in ranks:
        assert res["bf16"].dtype == torch.bfloat16 and torch.equal(res["bf16"], expect_bf16)
        assert res["uint8"].shape == (1 + 2, 4)
        assert torch.equal(res["sum_int64"], torch.arange(6) * 3)
        assert torch.equal(res["sum_float64"], torch.full((2,), 0.1, dtype=torch.float64)
                           + torch.full((2,), 0.2, dtype=torch.float64))
    assert torch.equal(ranks[0]["uint8"], ranks[1]["uint8"])
    assert ranks[0]["world_size"] == WORLD_SIZE and ranks[0]["tokens"] == 5 * 12

    for estimator, reduction in CASES:
        single = score_blocks(str(folder), ids, estimator=estimator, reduction=reduction, max_run=MAX_RUN,
                              progress=False, device="cpu")
        for r, res in enumerate(ranks):
            got = res[f"{estimator}-{reduction}"]
            if estimator in ("hist", "ksg"):
                # Integer counts summed / the same rows gathered: exactly the single-process numbers.
                np.testing.assert_array_equal(got, single.values, err_msg=f"{estimator} {reduction} rank {r}")
            else:
                # Float sums in another order: a few ulps of float64 (values are O(1)).
                np.testing.assert_allclose(got, single.values, rtol=1e-12, atol=1e-13,
                                           err_msg=f"{estimator} {reduction} rank {r}")
        if estimator == "hist":
            dp_table = type(single)(values=ranks[0][f"{estimator}-{reduction}"], estimator=estimator,
                                    settings=single.settings)
            assert select(dp_table, 2).removed == select(single, 2).removed

    # Streaming and data parallelism together: each process streams the checkpoint over its shard.
    single = score_blocks(str(folder), ids, estimator="hist", max_run=MAX_RUN, progress=False, device="cpu")
    for res in ranks:
        np.testing.assert_array_equal(res["hist-offload"], single.values)
