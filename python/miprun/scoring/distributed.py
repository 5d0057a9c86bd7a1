"""Data-parallel calibration over ``torch.distributed``.

K processes (e.g. started by ``torchrun --nproc-per-node K -m miprun score ...``) each hold
a contiguous shard of the calibration samples, run the model over it, and combine what the
score table needs through :class:`TorchDistributedReducer`: histogram counts and other
sums are all-reduced, edge rows and KSG subsamples all-gathered in rank order. With the
shard's ``token_offset`` and the global ``total_tokens`` passed to
:func:`miprun.score.score_states`, every process gets the single-process table (exactly
for integer counts; see that function for float sums). Only rank 0 writes output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from typing import Protocol, runtime_checkable

__all__ = ["Reducer", "LocalReducer", "TorchDistributedReducer", "CalibrationShard", "DataParallel",
           "shard_calibration"]


@runtime_checkable
class Reducer(Protocol):
    """Collective operations across data-parallel processes.

    Every process calls each method with a tensor of the same dtype (and, for
    ``all_reduce_sum``, the same shape) in the same order.
    """

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over processes; every process gets the result."""
        ...

    def all_gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's tensor along dim 0, in rank order (row counts may differ)."""
        ...


class LocalReducer:
    """The single-process reducer: sums and gathers over one process are the tensor itself."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor



class TorchDistributedReducer:
    """The :class:`miprun.score.Reducer` protocol on ``torch.distributed`` collectives.

    Parameters
    ----------
    group : ProcessGroup, optional
        Process group (default: the world).

    Notes
    -----
    Tensors go to the backend's device for the collective and come back to their own:
    NCCL needs CUDA tensors, gloo CPU ones. ``all_gather_rows`` moves raw bytes, so it is
    exact for every dtype (bf16, uint8 codes, ...) whatever the backend supports.
    """

    def __init__(self, group=None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised; call torch.distributed.init_process_group "
                               "first (torchrun sets the environment for it), or use DataParallel.from_env()")
        self.group = group
        self.backend = dist.get_backend(group)
        self.world_size = dist.get_world_size(group)

    def _comm_device(self, tensor: torch.Tensor) -> torch.device:
        if self.backend == "nccl":
            return tensor.device if tensor.device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over processes, returned on ``tensor``'s device (the input is not modified)."""
        dev = self._comm_device(tensor)
        buf = tensor.detach().to(dev, copy=True).contiguous()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
        return buf.to(tensor.device)

    def all_gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's ``tensor`` along dim 0 in rank order; row counts may differ.

        Trailing dimensions and dtype must agree across processes.
        """
        if tensor.ndim == 0:
            raise ValueError("all_gather_rows needs a tensor with a row dimension, got a 0-d tensor")
        dev = self._comm_device(tensor)
        rows = tensor.shape[0]
        counts = torch.tensor([rows], dtype=torch.int64, device=dev)
        all_counts = [torch.empty_like(counts) for _ in range(self.world_size)]
        dist.all_gather(all_counts, counts, group=self.group)
        sizes = [int(c.item()) for c in all_counts]
        most = max(sizes)
        # Rows as raw bytes: (rows, row_bytes) uint8, padded to the longest shard.
        row_elems = 1
        for s in tensor.shape[1:]:
            row_elems *= s
        row_bytes = row_elems * tensor.element_size()
        raw = tensor.detach().contiguous().reshape(rows, row_elems).view(torch.uint8)  # (rows, row_bytes)
        padded = torch.zeros((most, row_bytes), dtype=torch.uint8, device=dev)
        padded[:rows] = raw.to(dev)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded, group=self.group)
        out = torch.cat([p[:n] for p, n in zip(parts, sizes)], 0)  # (sum of rows, row_bytes)
        out = out.to(tensor.device).view(tensor.dtype)
        return out.reshape(sum(sizes), *tensor.shape[1:])


@dataclass(frozen=True)
class CalibrationShard:
    """This process's contiguous share of the calibration samples.

    Attributes
    ----------
    input_ids : LongTensor, shape (rows, seq_len)
    start : int
        Index of its first sample among all samples.
    token_offset : int
        Global index of its first scored token row (``start * (seq_len - skip_first)``).
    total_tokens : int
        Scored token rows of all processes.
    """

    input_ids: torch.Tensor
    start: int
    token_offset: int
    total_tokens: int


def shard_calibration(input_ids: torch.Tensor, rank: int, world_size: int, *, skip_first: int = 0) -> CalibrationShard:
    """Split the samples into ``world_size`` contiguous shards (sizes differ by at most one); take ``rank``'s.

    Parameters
    ----------
    input_ids : LongTensor, shape (n_samples, seq_len)
        All calibration tokens (identical on every process).
    rank, world_size : int
    skip_first : int
        Positions left out of scoring per sample (as in :func:`miprun.score.score_states`).
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must have shape (n_samples, seq_len), got {tuple(input_ids.shape)}")
    n, seq_len = input_ids.shape
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    if n < world_size:
        raise ValueError(f"{n} calibration samples cannot be shared by {world_size} processes; use at least "
                         f"{world_size} samples (--n-samples) or fewer processes")
    start = rank * n // world_size
    stop = (rank + 1) * n // world_size
    per_sample = seq_len - skip_first
    return CalibrationShard(input_ids[start:stop], start, start * per_sample, n * per_sample)


@dataclass
class DataParallel:
    """Where this process stands in a data-parallel run, and its collectives.

    Attributes
    ----------
    rank, world_size, local_rank : int
    device : torch.device
        This process's compute device (``cuda:<local_rank>`` when CUDA exists, else CPU).
    reducer : Reducer
        :class:`TorchDistributedReducer` with several processes, else the local no-op.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    reducer: object
    _owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes output."""
        return self.rank == 0

    @classmethod
    def from_env(cls, backend: str | None = None, device=None) -> "DataParallel":
        """Join the run ``torchrun`` describes in the environment, or a one-process run.

        Parameters
        ----------
        backend : str, optional
            ``nccl`` or ``gloo`` (default: ``nccl`` when CUDA exists, else ``gloo``).
        device : str or torch.device, optional
            Compute device; default ``cuda:<LOCAL_RANK>`` with CUDA, else CPU.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            dev = torch.device(device) if device is not None else None
            return cls(0, 1, 0, dev, LocalReducer())
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device is not None:
            dev = torch.device(device)
        elif torch.cuda.is_available():
            dev = torch.device("cuda", local_rank)
        else:
            dev = torch.device("cpu")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        owns = False
        if not dist.is_initialized():
            chosen = backend or ("nccl" if dev.type == "cuda" else "gloo")
            dist.init_process_group(backend=chosen, rank=rank, world_size=world_size)
            owns = True
        return cls(rank, world_size, local_rank, dev, TorchDistributedReducer(), owns)

    def shard(self, input_ids: torch.Tensor, *, skip_first: int = 0) -> CalibrationShard:
        """This process's contiguous share of ``input_ids`` (see :func:`shard_calibration`)."""
        return shard_calibration(input_ids, self.rank, self.world_size, skip_first=skip_first)

    def scoring_share(self, input_ids: torch.Tensor, *, skip_first: int = 0) -> tuple[torch.Tensor, dict]:
        """This process's token ids and the keyword arguments :func:`score_states` needs to combine the shares."""
        if self.world_size <= 1:
            return input_ids, {}
        shard = self.shard(input_ids, skip_first=skip_first)
        return shard.input_ids, {"reducer": self.reducer, "token_offset": shard.token_offset,
                                 "total_tokens": shard.total_tokens}

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this object created it."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False
