"""The body of one data-parallel process of the distributed heal test (started with torch.multiprocessing)."""

from __future__ import annotations

import os

import torch
from support import torchrun_env

# 9 windows: 8 fitted, the last held back; the plan from the scores alone (verify 0), the one the test relies on
SETTINGS = dict(num_remove=2, selector="optimal", verify=0, heal="linear", heal_refit=1, device="cpu", plots=False,
                batch_size=2, held_back=0.12)


def worker(rank: int, world_size: int, port: int, model_dir: str, input_ids: torch.Tensor, out_dir: str,
           settings: dict | None = None) -> None:
    torchrun_env(rank, world_size, port)
    torch.set_num_threads(1)
    from miprun.pipeline.prune import prune
    from miprun.scoring.distributed import DataParallel

    dp = DataParallel.from_env(backend="gloo", device="cpu")
    try:
        result = prune(model_dir, input_ids, data_parallel=dp, progress=False, **(settings or SETTINGS))
        torch.save({"removed": result.plan.removed, "heal": result.report["heal"],
                    "state": {k: v.clone() for k, v in result.model.state_dict().items()}},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        dp.barrier()
    finally:
        dp.close()
