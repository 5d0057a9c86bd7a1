"""Capability markers and data paths shared by the tests (import as `from support import ...`)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MIPRUN_DATA", REPO.parent / "shared" / "data"))
STORIES = DATA / "models" / "stories260K-hf"


def _native_error() -> ImportError | None:
    """Why miprun._core cannot be used (not built, stale, another version), or None."""
    from miprun._native import core
    try:
        core()
    except ImportError as exc:
        return exc
    return None


def _triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


#: MIPRUN_REQUIRE_NATIVE=1 (set in CI): a missing or unusable native core fails the tests
#: that need it, with the import error, instead of skipping them.
REQUIRE_NATIVE = os.environ.get("MIPRUN_REQUIRE_NATIVE", "") not in ("", "0")
NATIVE_ERROR = _native_error()

requires_triton = pytest.mark.skipif(not _triton(), reason="triton is not installed")
# The markers registered in pyproject.toml. tests/conftest.py skips the tests whose needs are
# not met (requires_native: fails them under MIPRUN_REQUIRE_NATIVE=1), and -m deselects them.
requires_native = pytest.mark.requires_native
requires_cuda = pytest.mark.requires_cuda
requires_data = pytest.mark.requires_data  # requires_data(path, ...): skipped unless every path exists
requires_stories = pytest.mark.requires_data(STORIES / "config.json")


def data_file(rel: str) -> Path:
    """Path of a file under the shared data folder; skips the test with the reason if absent."""
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"data file {p} not found (set MIPRUN_DATA to the shared data folder)")
    return p


def stories_copy(folder: Path) -> Path:
    """A copy of stories260K at ``folder``, to edit or write beside; skips the test when the model is absent."""
    if not (STORIES / "config.json").exists():
        pytest.skip(f"stories260K model not found at {STORIES}")
    shutil.copytree(STORIES, folder)
    return folder


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` for the block, then put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def record_checkpoint_reads(monkeypatch) -> list[list[str]]:
    """Every ``Checkpoint.load`` call's tensor names, in order, from now on in the test."""
    from miprun.models.checkpoint import Checkpoint
    reads: list[list[str]] = []
    real_load = Checkpoint.load

    def recording_load(self, names, **kw):
        names = list(names)
        reads.append(names)
        return real_load(self, names, **kw)

    monkeypatch.setattr(Checkpoint, "load", recording_load)
    return reads


def torchrun_env(rank: int, world_size: int, port: int) -> None:
    """Set the environment ``torchrun`` gives process ``rank`` (inside a spawned test worker)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(worker, args: tuple, nprocs: int, deadline_s: float = 300) -> None:
    """Run ``worker(rank, *args)`` in ``nprocs`` spawned processes; fail the test past ``deadline_s``."""
    import time
    import torch.multiprocessing as mp
    ctx = mp.start_processes(worker, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + deadline_s
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.terminate()
            pytest.fail(f"data-parallel processes did not finish within {deadline_s} s")


class ThreadReducer:
    """K threads acting as K data-parallel processes (same collective order on every rank).

    ``shared``: ``{"slots": [None] * K, "barrier": threading.Barrier(K)}``, one for all K.
    """

    def __init__(self, rank, shared):
        self.rank, self.shared = rank, shared

    def _exchange(self, t):
        slots, barrier = self.shared["slots"], self.shared["barrier"]
        slots[self.rank] = t
        barrier.wait()
        parts = list(slots)
        barrier.wait()  # everyone has read before the next exchange overwrites
        return parts

    def all_reduce_sum(self, t):
        parts = self._exchange(t)
        out = parts[0].clone()
        for p in parts[1:]:
            out += p
        return out

    def all_gather_rows(self, t):
        return torch.cat(self._exchange(t), 0)


def spread_gaussian(n: int, dx: int, dy: int, snr: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Gaussian vectors ``x ~ N(0, I)``, ``y = x W + e``, ``e ~ N(0, I)``, ``W`` a random ``(dx, dy)`` with all
    singular values ``sqrt(snr)``.

    Every column of y depends on every column of x. ``I = min(dx, dy) / 2 * log(1 + snr)``.
    """
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(dx, dy), min(dx, dy), generator=g, dtype=torch.float64))
    w = math.sqrt(snr) * (q if dx >= dy else q.T)
    x = torch.randn(n, dx, generator=g, dtype=torch.float64)
    y = x @ w + torch.randn(n, dy, generator=g, dtype=torch.float64)
    return x, y, 0.5 * min(dx, dy) * math.log1p(snr)
