"""What the Triton kernels share: the triton import, grid sizes, device checks."""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("miprun's GPU kernels need triton: `pip install triton` "
                      "(CUDA builds of torch ship it)") from e

__all__ = ["triton", "tl", "program_count", "target_programs", "check_device", "PROGRAMS_PER_SM",
           "INTERPRETER_PROGRAMS"]

PROGRAMS_PER_SM = 4  # persistent programs per SM: enough warps in flight to hide memory latency
INTERPRETER_PROGRAMS = 3  # on CPU a few programs still exercise the merge of per-program tables


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(*tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` unless all tensors share one device that Triton can run on."""
    dev = tensors[0].device
    for t in tensors[1:]:
        if t.device != dev:
            raise ValueError(f"tensors must share one device, got {dev} and {t.device}")
    if dev.type != "cuda" and not (dev.type == "cpu" and _interpreted()):
        raise ValueError(f"Triton kernels run CUDA tensors (or CPU tensors with TRITON_INTERPRET=1); got {dev}")


def target_programs(device: torch.device) -> int:
    """How many programs a launch should aim for on ``device`` to fill it."""
    if device.type == "cuda":
        return PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_PROGRAMS


def program_count(device: torch.device, work: int, block: int) -> int:
    """Number of persistent programs for ``work`` items processed ``block`` at a time (at least 1)."""
    return max(1, min(triton.cdiv(work, block), target_programs(device)))
