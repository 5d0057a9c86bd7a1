"""The body of one process of the data-parallel measurement test (started with torch.multiprocessing)."""

from __future__ import annotations

import os

import torch
from support import torchrun_env

#: 12 windows: 9 scored (shared 5 / 4 by two processes), 3 held back and measured (shared 2 / 1)
SETTINGS = dict(num_remove=2, device="cpu", plots=False, batch_size=2, offload=True)


def worker(rank: int, world_size: int, port: int, model_dir: str, input_ids: torch.Tensor, out_dir: str) -> None:
    torchrun_env(rank, world_size, port)
    torch.set_num_threads(1)
    from miprun.pipeline.prune import prune
    from miprun.scoring.distributed import DataParallel

    dp = DataParallel.from_env(backend="gloo", device="cpu")
    try:
        result = prune(model_dir, input_ids, data_parallel=dp, progress=False,
                       out_dir=os.path.join(out_dir, "pruned"), **SETTINGS)
        torch.save({"removed": result.plan.removed, "verify": result.report["verify"],
                    "plan_check": result.report["plan_check"]}, os.path.join(out_dir, f"rank{rank}.pt"))
        dp.barrier()
    finally:
        dp.close()
