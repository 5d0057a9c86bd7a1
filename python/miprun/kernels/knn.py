"""Triton kernels for KSG mutual information (Kraskov estimator 1), tiled brute force.

The specification is ``miprun.mi.ksg.ksg_points_ref``: ``eps_i`` is the distance from point
``i`` to its ``k``-th nearest neighbour in the joint space (itself excluded), the larger of
its distances in x and in y, ``n_x(i)`` counts the other points with
``||x_i - x_j|| < eps_i`` (strictly), and ``I = psi(k) + psi(m) - <psi(n_x + 1) + psi(n_y + 1)>``.
The norm within x and within y is the max-norm or the Euclidean norm (``metric``).

Two passes over all pairs, each program holding a tile of query points and streaming
tiles of all points through registers:
1. ``_kth_distance_kernel`` keeps, per query, the ``k`` smallest joint keys seen so far (a
   small unsorted set; a candidate replaces the set's largest when smaller) and writes the
   ``k``-th. A key is the distance for the max-norm and, for the Euclidean norm, the
   squared distance (the reference's ``keys_ref``): the larger of the two sums of squares;
2. ``_range_count_kernel`` counts the points whose key in each marginal is strictly below
   the ``k``-th key.
Both variables are packed into one float64 array first (a copy of ``O(m)`` against
the ``O(m^2)`` work), so one loop over coordinates serves x and y.
The digamma epilogue runs in torch on the device. A grid axis over columns makes the
per-column (``per_dim``) estimator one launch: column ``j`` is a scalar pair.

Distances are float64, as in the reference. The inputs carry a tie-breaking jitter of
``1e-10`` relative (``miprun.mi.ksg.prepare``), far below float32 resolution (``6e-8``):
in float32 the ties of bf16-valued activations would come back, ``eps`` could be 0 and
the counts would change. In float64 the kernel computes exactly the reference's
distances (a subtraction, an absolute value and maxima are exact operations after the
rounded subtraction; squares are added one coordinate after another, as the reference
adds them, and the kernels are compiled without fused multiply-adds), so ``eps`` and the
counts match it exactly.
"""

from __future__ import annotations

import torch

from miprun.kernels._triton import check_device, tl, triton

__all__ = ["ksg_points_triton", "ksg_per_dim_triton", "ksg_counts_triton"]

# (query points per program, candidate points per streamed tile). On sm_90 with 8 warps,
# 64 x 32 float64 tiles compile to 126-144 registers (k = 3..10) without spills, two
# programs per SM; 64 x 64 needs 184 and 32 x 64 spills. Triton's interpreter pays per
# operation, not per element, so CPU runs use larger tiles.
GPU_BLOCKS = (64, 32)
INTERPRETER_BLOCKS = (128, 256)
NUM_WARPS = 8
METRICS = ("chebyshev", "euclidean")


# The points of both variables sit in one float64 array ``z``: point ``i`` of column
# ``col`` has coordinates ``z[col * col_step + i * stride_r + j * stride_d]``, ``j < dx``
# for x and ``dx <= j < dz`` for y (the launcher lays points out contiguously). Loops
# over coordinates are written out in each kernel: a nested jit function called in a hot
# loop is slow in Triton's interpreter.
@triton.jit
def _kth_distance_kernel(z_ptr, eps_ptr, m, dx, dz, stride_r, stride_d, col_step, EUCLID: tl.constexpr,
                         K: tl.constexpr, KP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """``eps_ptr[col, i]`` = the ``K``-th smallest joint key from point ``i`` to the other points of (x, y).

    Key: the max-norm distance over all ``dz`` coordinates, or with ``EUCLID`` the larger of
    the sums of squares over x's ``dx`` coordinates and over y's.
    """
    col = tl.program_id(1)
    zb = z_ptr + col.to(tl.int64) * col_step
    q = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    q_off = tl.minimum(q, m - 1).to(tl.int64) * stride_r  # rows past the end read the last point; never stored
    slots = tl.arange(0, KP)
    # the K smallest distances so far; slots >= K hold -inf so they are never the largest
    best = tl.where(slots[None, :] < K, float("inf"), float("-inf")) + tl.zeros((BLOCK_M, KP), tl.float64)
    inner = tl.arange(0, BLOCK_N)
    for n0 in range(0, m, BLOCK_N):
        c = n0 + inner
        c_off = tl.minimum(c, m - 1).to(tl.int64) * stride_r
        dist = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
        if EUCLID:
            for j in range(dx):
                a = tl.load(zb + q_off + j * stride_d)  # (M,)
                b = tl.load(zb + c_off + j * stride_d)  # (N,)
                d = a[:, None] - b[None, :]
                dist = dist + d * d
            sy = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
            for j in range(dx, dz):
                a = tl.load(zb + q_off + j * stride_d)
                b = tl.load(zb + c_off + j * stride_d)
                d = a[:, None] - b[None, :]
                sy = sy + d * d
            dist = tl.maximum(dist, sy)
        else:
            for j in range(dz):
                a = tl.load(zb + q_off + j * stride_d)  # (M,)
                b = tl.load(zb + c_off + j * stride_d)  # (N,)
                dist = tl.maximum(dist, tl.abs(a[:, None] - b[None, :]))
        dist = tl.where((c < m)[None, :] & (c[None, :] != q[:, None]), dist, float("inf"))
        # at most K of the tile can enter a query's set: merge its smallest ones one at a time
        kth = tl.max(best, 1)
        rounds = tl.minimum(tl.max(tl.sum((dist < kth[:, None]).to(tl.int32), 1)), K)
        for _ in range(rounds):
            dmin, amin = tl.min(dist, 1, return_indices=True)
            worst, wslot = tl.max(best, 1, return_indices=True)
            take = (slots[None, :] == wslot[:, None]) & (dmin < worst)[:, None]
            best = tl.where(take, dmin[:, None], best)
            dist = tl.where(inner[None, :] == amin[:, None], float("inf"), dist)  # remove one copy only
    tl.store(eps_ptr + col * m + q, tl.max(best, 1), mask=q < m)


@triton.jit
def _range_count_kernel(z_ptr, eps_ptr, nx_ptr, ny_ptr, m, dx, dz, stride_r, stride_d, col_step,
                        EUCLID: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """``n_x[col, i]``, ``n_y[col, i]``: other points whose key in x and in y is below ``eps[col, i]``.

    Key: the max-norm distance, or with ``EUCLID`` the sum of squares.
    """
    col = tl.program_id(1)
    zb = z_ptr + col.to(tl.int64) * col_step
    q = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    q_off = tl.minimum(q, m - 1).to(tl.int64) * stride_r
    eps = tl.load(eps_ptr + col * m + tl.minimum(q, m - 1))[:, None]  # (M, 1): the k-th key
    cnt_x = tl.zeros((BLOCK_M,), tl.int32)
    cnt_y = tl.zeros((BLOCK_M,), tl.int32)
    inner = tl.arange(0, BLOCK_N)
    for n0 in range(0, m, BLOCK_N):
        c = n0 + inner
        c_ok = (c < m)[None, :]
        c_off = tl.minimum(c, m - 1).to(tl.int64) * stride_r
        dist_x = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
        for j in range(dx):
            a = tl.load(zb + q_off + j * stride_d)
            b = tl.load(zb + c_off + j * stride_d)
            if EUCLID:
                d = a[:, None] - b[None, :]
                dist_x = dist_x + d * d
            else:
                dist_x = tl.maximum(dist_x, tl.abs(a[:, None] - b[None, :]))
        cnt_x += tl.sum(((dist_x < eps) & c_ok).to(tl.int32), 1)
        dist_y = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
        for j in range(dx, dz):
            a = tl.load(zb + q_off + j * stride_d)
            b = tl.load(zb + c_off + j * stride_d)
            if EUCLID:
                d = a[:, None] - b[None, :]
                dist_y = dist_y + d * d
            else:
                dist_y = tl.maximum(dist_y, tl.abs(a[:, None] - b[None, :]))
        cnt_y += tl.sum(((dist_y < eps) & c_ok).to(tl.int32), 1)
    # the point itself is at key 0 < eps and was counted, as in the reference
    tl.store(nx_ptr + col * m + q, cnt_x - 1, mask=q < m)
    tl.store(ny_ptr + col * m + q, cnt_y - 1, mask=q < m)


def _check_points(xp, yp, k) -> tuple[torch.Tensor, torch.Tensor]:
    for name, p in (("xp", xp), ("yp", yp)):
        if not isinstance(p, torch.Tensor) or p.ndim != 2 or not p.is_floating_point():
            raise ValueError(f"{name} must be a 2-D float tensor of points (m, dims), got "
                             f"{getattr(p, 'shape', type(p).__name__)} {getattr(p, 'dtype', '')}")
        if p.shape[1] == 0:
            raise ValueError(f"{name} has no dimensions: shape {tuple(p.shape)}")
    if xp.shape[0] != yp.shape[0]:
        raise ValueError(f"xp and yp must hold the same points: {xp.shape[0]} and {yp.shape[0]} rows")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if xp.shape[0] < k + 1:
        raise ValueError(f"KSG with k={k} needs at least {k + 1} samples, got {xp.shape[0]}")
    check_device(xp, yp)
    return xp.to(torch.float64).contiguous(), yp.to(torch.float64).contiguous()


def ksg_counts_triton(xp: torch.Tensor, yp: torch.Tensor, k: int, *, per_dim: bool = False,
                      metric: str = "chebyshev"):
    """``eps``, ``n_x`` and ``n_y`` of KSG estimator 1 on the device.

    Parameters
    ----------
    xp, yp : tensor, shape (m, dx) and (m, dy)
        Prepared points (``miprun.mi.ksg.prepare``); used in float64.
    k : int
        Neighbours.
    per_dim : bool
        Treat column ``j`` of ``xp`` and of ``yp`` as one scalar pair (needs ``dx == dy``).
    metric : {"chebyshev", "euclidean"}
        The norm within x and within y (scalar pairs: the same distances either way).

    Returns
    -------
    eps : tensor, float64, shape (cols, m)
        Key of the ``k``-th nearest other point, ``cols = d`` per column or 1: its distance,
        or for the Euclidean norm its squared distance.
    n_x, n_y : tensor, int32, shape (cols, m)
        Other points whose key in x and in y is strictly below ``eps``.
    """
    xp, yp = _check_points(xp, yp, k)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    m = xp.shape[0]
    if per_dim:
        if xp.shape[1] != yp.shape[1]:
            raise ValueError(f"per_dim pairs column j of xp with column j of yp; "
                             f"got {xp.shape[1]} and {yp.shape[1]} columns")
        cols, dx = xp.shape[1], 1
        z = torch.stack([xp.t(), yp.t()], 1).contiguous()  # (d, 2, m): points contiguous, loads coalesce
        stride_r, stride_d, col_step = z.stride(2), z.stride(1), z.stride(0)
    else:
        cols, dx = 1, xp.shape[1]
        z = torch.cat([xp, yp], 1).t().contiguous()  # (dx + dy, m)
        stride_r, stride_d, col_step = z.stride(1), z.stride(0), 0
    dz = dx + (1 if per_dim else yp.shape[1])
    # one coordinate in each space (and per_dim's scalar pairs): the same distance in both
    # norms, computed as the max-norm, as the reference does
    euclid = metric == "euclidean" and dz > 2
    eps = torch.empty((cols, m), dtype=torch.float64, device=xp.device)
    n_x = torch.empty((cols, m), dtype=torch.int32, device=xp.device)
    n_y = torch.empty_like(n_x)
    block_m, block_n = GPU_BLOCKS if xp.device.type == "cuda" else INTERPRETER_BLOCKS
    grid = (triton.cdiv(m, block_m), cols)
    # enable_fp_fusion=False: a fused multiply-add would round a sum of squares differently
    # from the reference's separate multiply and add
    _kth_distance_kernel[grid](z, eps, m, dx, dz, stride_r, stride_d, col_step, EUCLID=euclid, K=k,
                               KP=max(2, triton.next_power_of_2(k)), BLOCK_M=block_m, BLOCK_N=block_n,
                               num_warps=NUM_WARPS, enable_fp_fusion=False)
    _range_count_kernel[grid](z, eps, n_x, n_y, m, dx, dz, stride_r, stride_d, col_step, EUCLID=euclid,
                              BLOCK_M=block_m, BLOCK_N=block_n, num_warps=NUM_WARPS, enable_fp_fusion=False)
    return eps, n_x, n_y


def _ksg_from_counts(n_x: torch.Tensor, n_y: torch.Tensor, k: int) -> torch.Tensor:
    """KSG-1 value per row of counts ``(cols, m)``: ``psi(k) + psi(m) - mean(psi(n_x+1) + psi(n_y+1))``."""
    m = n_x.shape[1]
    psi = torch.special.digamma((n_x + 1).to(torch.float64)) + torch.special.digamma((n_y + 1).to(torch.float64))
    const = torch.special.digamma(torch.tensor([float(k), float(m)], dtype=torch.float64, device=n_x.device)).sum()
    return const - psi.mean(1)


def ksg_points_triton(xp: torch.Tensor, yp: torch.Tensor, k: int, *, metric: str = "chebyshev") -> float:
    """Raw KSG-1 MI in nats of point sets ``xp: (m, dx)``, ``yp: (m, dy)``; equals ``ksg_points_ref``.

    Not clipped at 0. Distances in float64 (see the module docstring); ``metric``: the norm
    within x and within y, ``"chebyshev"`` or ``"euclidean"``.
    """
    _, n_x, n_y = ksg_counts_triton(xp, yp, k, metric=metric)
    return float(_ksg_from_counts(n_x, n_y, k)[0])


def ksg_per_dim_triton(xp: torch.Tensor, yp: torch.Tensor, k: int) -> float:
    """Mean over columns ``j`` of the raw scalar KSG-1 MI of ``xp[:, j]`` and ``yp[:, j]``, in nats.

    ``xp, yp: (m, d)`` prepared points; equals the mean of ``ksg_points_ref`` over columns.
    """
    _, n_x, n_y = ksg_counts_triton(xp, yp, k, per_dim=True)
    return float(_ksg_from_counts(n_x, n_y, k).mean())
