"""Type stubs for the native core ``miprun._core`` (docstrings live in csrc/bindings.cpp)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import numpy.typing as npt

__version__: str  # pyproject.toml's version at build time; miprun._native refuses another
openmp: bool

# --- mi ---

def compute_edges(
    x: npt.NDArray[np.floating], bins: int, binning: str = "quantile", per_dim: bool = False
) -> npt.NDArray[np.float64]: ...
def codes_from_edges(x: npt.NDArray[np.floating], edges: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]: ...
def joint_counts(
    cx: npt.NDArray[np.uint8], cy: npt.NDArray[np.uint8], bins: int, per_dim: bool = False
) -> npt.NDArray[np.int64]: ...
def mi_from_counts(counts: npt.NDArray[np.int64], miller_madow: bool = False) -> float: ...
def hist_mi(
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    *,
    bins: int,
    binning: str = "quantile",
    reduction: str = "pooled",
    miller_madow: bool = False,
) -> float: ...
def gaussian_mi(x: npt.NDArray[np.floating], y: npt.NDArray[np.floating], *, reduction: str = "pooled") -> float: ...
def ksg_points(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], k: int = 3, metric: str = "chebyshev"
) -> float: ...
def ksg_per_dim(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], k: int = 3) -> float: ...


# --- select ---

class FbsCandidate:
    start: int
    estimated: float
    actual: float

class FbsGroup:
    start: int
    length: int
    listed: int
    k: int
    candidates: list[FbsCandidate]
    chosen_start: int

class FbsIteration:
    pruning_set: list[int]
    groups: list[FbsGroup]
    current_sum: float
    chosen_sum: float
    new_pruning_set: list[int]

class FbsResult:
    removed: list[int]
    evaluations: int
    single_evaluations: int
    iterations: int
    converged: bool
    trace: list[FbsIteration]

def fast_block_select(
    scores: npt.NDArray[np.float64],
    num_remove: int,
    *,
    log_base: float = ...,
    allow_touching: bool = True,
    max_iterations: int = 100,
) -> FbsResult: ...
def fast_block_select_callback(
    num_blocks: int,
    score: Callable[[int, int], float],
    num_remove: int,
    *,
    log_base: float = ...,
    allow_touching: bool = True,
    max_iterations: int = 100,
) -> FbsResult: ...
def optimal(scores: npt.NDArray[np.float64], num_remove: int) -> tuple[list[int], float]: ...
def optimal_kbest(
    scores: npt.NDArray[np.float64], num_remove: int, k: int
) -> list[tuple[list[int], float]]: ...
def exhaustive(
    scores: npt.NDArray[np.float64], num_remove: int, *, max_subsets: float = 5e7
) -> tuple[list[int], float, float]: ...
def greedy(single: npt.NDArray[np.float64], num_remove: int) -> list[int]: ...
