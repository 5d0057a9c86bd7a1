"""The body of one data-parallel process in the distributed tests (started with torch.multiprocessing)."""

from __future__ import annotations

import os

import torch
from support import torchrun_env

#: (estimator, reduction) pairs scored by every process.
CASES = (("hist", "pooled"), ("hist", "per_dim"), ("ksg", "pooled"), ("gaussian", "pooled"), ("cosine", "pooled"))
MAX_RUN = 2


def worker(rank: int, world_size: int, port: int, model_dir: str, input_ids: torch.Tensor, out_dir: str) -> None:
    torchrun_env(rank, world_size, port)
    torch.set_num_threads(1)
    from miprun.scoring.distributed import DataParallel
    from miprun.scoring.score import score_blocks

    dp = DataParallel.from_env(backend="gloo", device="cpu")
    try:
        reducer = dp.reducer
        results = {}
        # Unequal row counts (rank 1 holds none), dtypes gloo cannot reduce (bf16, uint8): gathered as bytes.
        g = torch.Generator().manual_seed(100 + rank)
        rows = 3 if rank == 0 else 0
        results["bf16"] = reducer.all_gather_rows(torch.randn(rows, 2, 3, generator=g).to(torch.bfloat16))
        results["uint8"] = reducer.all_gather_rows(torch.randint(0, 255, (rank + 1, 4), generator=g,
                                                                 dtype=torch.uint8))
        results["sum_int64"] = reducer.all_reduce_sum(torch.arange(6, dtype=torch.int64) * (rank + 1))
        results["sum_float64"] = reducer.all_reduce_sum(torch.full((2,), 0.1 * (rank + 1), dtype=torch.float64))
        for estimator, reduction in CASES:
            table = score_blocks(model_dir, input_ids, data_parallel=dp, estimator=estimator,
                                 reduction=reduction, max_run=MAX_RUN, progress=False, device="cpu")
            results[f"{estimator}-{reduction}"] = table.values
        table = score_blocks(model_dir, input_ids, data_parallel=dp, estimator="hist", max_run=MAX_RUN,
                                           progress=False, device="cpu", offload=True)
        results["hist-offload"] = table.values
        results["world_size"] = table.settings["world_size"]
        results["tokens"] = table.settings["tokens"]
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dp.barrier()
    finally:
        dp.close()
