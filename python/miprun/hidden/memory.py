"""Memory estimates and pre-flight checks for streaming (offload) scoring.

Streaming keeps one block's weights, the calibration activations and the score window in
memory, whatever the depth. The numbers here come from the safetensors headers and the
config alone, so a run that cannot fit fails in seconds, before any weight is read.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass

import psutil
import torch

from miprun.models.checkpoint import Checkpoint

#: Fraction of the free memory a run may plan to use; the rest absorbs allocator slack.
USABLE_FRACTION = 0.9


def release_host_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim(0)``).

    Freed block weights and hidden states go back to glibc's heaps (one per thread that
    allocated), which keep their free pages: without this, host memory grows with every
    block streamed even though nothing stays referenced. Cheap next to running a block.
    Returns False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        return bool(_LIBC.malloc_trim(0))
    except (OSError, AttributeError):
        return False


_LIBC = None


class PreflightError(ValueError):
    """A streaming run that cannot work on this device, found before any long work."""


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` in bytes: CUDA free memory, or the host's available memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def check_dtype_runs(device: torch.device, dtype: torch.dtype) -> None:
    """Raise :class:`PreflightError` when ``device`` cannot run a matmul and a softmax in ``dtype``.

    A tiny op is tried rather than a table consulted: support depends on the build and the
    hardware (bf16 on pre-Ampere GPUs, fp16 on some CPU builds).
    """
    device = torch.device(device)
    if not dtype.is_floating_point:
        raise PreflightError(f"dtype {dtype} is not a floating-point type; use float32, bfloat16 or float16")
    try:
        a = torch.linspace(-1.0, 1.0, 64, device=device).reshape(8, 8).to(dtype)
        out = torch.softmax(a @ a.T, dim=-1).float()
        if not bool(torch.isfinite(out).all()):
            raise RuntimeError("non-finite result")
    except (RuntimeError, TypeError) as exc:
        raise PreflightError(
            f"device {device} cannot run {dtype} (a small matmul failed: {exc}); "
            "pass dtype=torch.float32 (--dtype float32) or use a device that supports it") from exc


def _config_int(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if isinstance(v, int) and v > 0:
            return v
    return default


@dataclass(frozen=True)
class OffloadEstimate:
    """Planned peak memory of a streaming run on the compute device, in bytes.

    Attributes
    ----------
    block_bytes : int
        The largest block's weights in the compute dtype.
    head_bytes : int
        What is loaded before block 0 (embedding and the like), freed once block 0's inputs exist.
    state_bytes : int
        One hidden state ``(n_samples, seq_len, d)`` in the compute dtype; two are alive
        while a block runs (its input and output).
    batch_bytes : int
        Transient memory of one batch inside a block (MLP intermediate, attention scores):
        an upper bound assuming eager attention.
    window_bytes : int
        The score window, as given by the caller.
    """

    block_bytes: int
    head_bytes: int
    state_bytes: int
    batch_bytes: int
    window_bytes: int = 0

    @property
    def peak_bytes(self) -> int:
        """The larger of the two peaks: capturing block 0's inputs, and running one block."""
        capture = self.head_bytes + self.state_bytes + self.batch_bytes
        block = self.block_bytes + 2 * self.state_bytes + self.batch_bytes + self.window_bytes
        return max(capture, block)


def estimate_offload(checkpoint: Checkpoint, config, *, block_names, head_names, n_samples: int, seq_len: int,
                     batch_size: int, dtype: torch.dtype, window_bytes: int = 0) -> OffloadEstimate:
    """Estimate the peak memory of streaming ``checkpoint`` block by block.

    Parameters
    ----------
    checkpoint : Checkpoint
    config : transformers.PretrainedConfig
    block_names : sequence of sequences of str
        Checkpoint tensor names of each block.
    head_names : sequence of str
        Checkpoint tensor names loaded before block 0 (embedding and the like).
    n_samples, seq_len, batch_size : int
        Calibration shape and how many samples run through a block at once.
    dtype : torch.dtype
        Compute dtype.
    window_bytes : int
        Bytes of the score window (kept by the scorer), added to the block peak.
    """
    block_bytes = max((checkpoint.nbytes(names, dtype) for names in block_names), default=0)
    head_bytes = checkpoint.nbytes(head_names, dtype)
    hidden = _config_int(config, "hidden_size", "n_embd", "d_model", default=1)
    inter = _config_int(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)
    heads = _config_int(config, "num_attention_heads", "n_head", default=1)
    size = dtype.itemsize
    batch = min(batch_size, n_samples)
    state_bytes = n_samples * seq_len * hidden * size
    batch_bytes = batch * seq_len * (4 * hidden + 3 * inter) * size + batch * heads * seq_len * seq_len * size
    return OffloadEstimate(block_bytes, head_bytes, state_bytes, batch_bytes, window_bytes)


def window_bytes(estimator: str, *, n_tokens: int, hidden: int, max_run: int, dtype_bytes: int = 2) -> int:
    """Bytes the one-pass scorer keeps for its window of past states (:mod:`miprun.window`).

    ``hist`` keeps uint8 bin codes, ``n_tokens x hidden`` bytes per state, for ``max_run``
    past states plus the new one; ``gaussian``, ``cosine`` and ``angular`` keep the past
    states themselves (the new one is the current hidden state, counted elsewhere); ``ksg``
    keeps small fixed-size subsamples (taken as zero).
    """
    if estimator == "hist":
        return (max_run + 1) * n_tokens * hidden
    if estimator in ("gaussian", "cosine", "angular"):
        return max_run * n_tokens * hidden * dtype_bytes
    return 0


def estimate_from_shapes(*, hidden: int, intermediate: int, num_heads: int, num_kv_heads: int, vocab: int,
                         n_samples: int, seq_len: int, batch_size: int, dtype_bytes: int = 2,
                         window: int = 0) -> OffloadEstimate:
    """The same estimate as :func:`estimate_offload`, from a Llama-style shape instead of a checkpoint.

    One block holds the q/k/v/o projections (k and v of ``num_kv_heads * head_dim``), the
    gated MLP (three ``hidden x intermediate`` matrices) and two norms; the head is the
    input embedding (``vocab x hidden``) and the final norm. Attention is taken to be fused
    (SDPA/flash: no ``seq_len x seq_len`` scores kept), unlike the eager-attention bound
    of :func:`estimate_offload`.
    """
    head_dim = hidden // num_heads
    block = (2 * hidden * hidden + 2 * hidden * num_kv_heads * head_dim + 3 * hidden * intermediate + 2 * hidden)
    batch = min(batch_size, n_samples)
    return OffloadEstimate(block_bytes=block * dtype_bytes, head_bytes=(vocab + 1) * hidden * dtype_bytes,
                           state_bytes=n_samples * seq_len * hidden * dtype_bytes,
                           batch_bytes=batch * seq_len * (4 * hidden + 3 * intermediate) * dtype_bytes,
                           window_bytes=window)


def check_fits(estimate: OffloadEstimate, device: torch.device, *, available: int | None = None) -> None:
    """Raise :class:`PreflightError` when the planned peak exceeds the usable free memory."""
    free = available_bytes(device) if available is None else available
    usable = int(free * USABLE_FRACTION)
    if estimate.peak_bytes > usable:
        gib = 2.0 ** 30
        raise PreflightError(
            f"streaming needs about {estimate.peak_bytes / gib:.2f} GiB on {device} (one block "
            f"{estimate.block_bytes / gib:.2f} GiB + hidden states 2 x {estimate.state_bytes / gib:.2f} GiB + "
            f"batch {estimate.batch_bytes / gib:.2f} GiB + score window {estimate.window_bytes / gib:.2f} GiB; "
            f"embedding {estimate.head_bytes / gib:.2f} GiB at the start) but only {free / gib:.2f} GiB is free; "
            "lower --n-samples/--seq-len/--batch-size or --max-run, or use a larger device")


def should_offload(checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype | None = None, *,
                   activation_bytes: int = 0, available: int | None = None) -> bool:
    """Decide ``offload="auto"``: stream when the whole model would not fit on ``device``.

    Parameters
    ----------
    checkpoint : Checkpoint
    device : torch.device
        The compute device.
    dtype : torch.dtype, optional
        Compute dtype (default: the checkpoint's stored floating dtype).
    activation_bytes : int
        Memory the run needs beside the weights (hidden states, score window).
    available : int, optional
        Free bytes to plan against (default: measured on ``device``).

    Returns
    -------
    bool
        True when the weights plus ``activation_bytes`` exceed the usable free memory.
    """
    free = available_bytes(device) if available is None else available
    weights = checkpoint.nbytes(checkpoint.tensors, dtype)
    return weights + activation_bytes > int(free * USABLE_FRACTION)
