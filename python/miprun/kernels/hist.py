"""Triton kernels for histogram MI: bin codes and joint counts.

The specification is the float64 reference in ``miprun.mi.codes`` (``codes_from_edges_ref``,
``joint_counts_ref``) and ``miprun.mi.hist.hist_ref``; these kernels return the same codes
and the same counts, bit for bit.

Codes. A value ``v`` gets ``#{edges <= v}`` by a branchless binary search over the edges
padded with ``+inf`` to a power of two (at most 8 steps for 256 bins). Comparing in
float32 is exact: every bf16/fp16/fp32 value is a float32, and an edge ``e`` (float64)
is replaced by the smallest float32 ``c >= e``, for which ``e <= v`` holds exactly when
``c <= v``. float64 inputs are compared in float64.

Joint counts, two strategies, both accumulating per program before touching the output:
- one-hot products (per column, and pooled with ``bins <= 64``): a tile of codes becomes
  one-hot matrices ``(bins, rows)`` and ``(rows, bins)`` whose int8 product on the tensor
  cores adds the tile's joint histogram to an int32 ``bins x bins`` accumulator held in
  registers (a batch of such tables when a program covers several columns). Each program
  adds its tables to the output once, at the end.
- replicated tables (pooled with ``bins > 64``): a ``bins x bins`` table of up to 65536
  cells does not fit on chip, so programs add into one of a few copies of the table in
  global memory (L2-resident), which spreads the atomics of hot cells over the copies;
  the copies are summed at the end.

``hist_counts_triton`` bins values inside the replicated-table kernel, so values are read once
and codes never touch memory. The one-hot kernel counts codes written by the codes
kernel instead: fused into it, the binary search runs in the one-hot operands' layouts,
which replicate it across threads (compiled for sm_90 that doubled the registers and
spilled).
"""

from __future__ import annotations

import torch

from miprun.kernels import MAX_BINS
from miprun.kernels._triton import check_device, target_programs, tl, triton
from miprun.kernels.edges import compute_edges_triton

__all__ = ["codes_from_edges_triton", "joint_counts_triton", "hist_counts_triton", "compute_edges_triton", "MAX_BINS"]

LAUNCH_ELEMENTS = 1 << 30  # elements per launch: int32 offsets and int32 counts stay exact
CODES_BLOCK = 1024
ATOMIC_BLOCK = 1024
ATOMIC_REPLICAS = 16
ACC_CELLS = 4096  # int32 accumulator cells per program: 16 registers a thread with 8 warps
ONEHOT_TILE = 4096  # elements of a one-hot operand per step (pooled: rows * bins)
ONEHOT_MAX_POOLED_BINS = 64  # above this, one-hot products cost more than replicated atomics


# ----------------------------------------------------------------------------- device functions
@triton.jit
def _search(v, e_ptr, base, LOG_P: tl.constexpr):
    """Codes ``#{edges <= v}`` of ``v`` against the ``2**LOG_P`` padded edges at ``e_ptr + base``."""
    pos = tl.full(v.shape, 0, tl.int32)
    for s in tl.static_range(LOG_P):
        step = 1 << (LOG_P - 1 - s)
        e = tl.load(e_ptr + base + pos + (step - 1))
        pos = tl.where(e <= v, pos + step, pos)
    return pos


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _codes_kernel(x_ptr, e_ptr, out_ptr, n_total, n_cols,
                  EDGES_PER_COL: tl.constexpr, LOG_P: tl.constexpr, BLOCK: tl.constexpr):
    """uint8 codes of the row-major ``(n, n_cols)`` values at ``x_ptr``; edges ``(P,)`` or ``(n_cols, P)``."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n_total
    if EDGES_PER_COL:
        ebase = (idx % n_cols) << LOG_P
    else:
        ebase = 0
    v = tl.load(x_ptr + idx, mask=mask, other=0.0).to(e_ptr.dtype.element_ty)
    code = _search(v, e_ptr, ebase, LOG_P)
    tl.store(out_ptr + idx, code.to(tl.uint8), mask=mask)


@triton.jit
def _joint_onehot_kernel(x_ptr, y_ptr, out_ptr, n_rows, n_cols, stride_r, rows_per_split, bins,
                         POOLED: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
                         BAND: tl.constexpr, BP: tl.constexpr):
    """Joint counts of uint8 codes by one-hot products: program (column tile, row split, band of x-bins).

    Code ``(r, c)`` of x and y is at ``r * stride_r + c``. The program accumulates the
    tables of its ``BLOCK_D`` columns, restricted to x-bins ``band*BAND ..``, over its rows,
    then adds them to ``out_ptr``: ``(n_cols, bins, bins)``, or summed over columns into
    ``(bins, bins)`` when ``POOLED``.
    """
    cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)  # (D,)
    col_ok = cols < n_cols
    a_ids = tl.program_id(2) * BAND + tl.arange(0, BAND)  # x-bins of this band
    b_ids = tl.arange(0, BP)  # every y-bin
    acc = tl.zeros((BLOCK_D, BAND, BP), dtype=tl.int32)
    r_lo = tl.program_id(1) * rows_per_split
    r_hi = tl.minimum(r_lo + rows_per_split, n_rows)
    for r0 in range(r_lo, r_hi, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        mask = col_ok[:, None] & (rows < r_hi)[None, :]  # (D, R)
        offs = rows[None, :] * stride_r + cols[:, None]
        cx = tl.load(x_ptr + offs, mask=mask, other=0).to(tl.int32)
        cy = tl.load(y_ptr + offs, mask=mask, other=0).to(tl.int32)
        cx = tl.where(mask, cx, -1)  # masked elements match no bin
        onehot_x = (cx[:, None, :] == a_ids[None, :, None]).to(tl.int8)  # (D, BAND, R)
        onehot_y = (cy[:, :, None] == b_ids[None, None, :]).to(tl.int8)  # (D, R, BP)
        acc = tl.dot(onehot_x, onehot_y, acc)  # (D, BAND, BP) += joint histogram of the tile
    cell_ok = (a_ids < bins)[:, None] & (b_ids < bins)[None, :]  # (BAND, BP)
    cells = a_ids[:, None] * bins + b_ids[None, :]
    if POOLED:
        tl.atomic_add(out_ptr + cells, tl.sum(acc, 0), mask=cell_ok, sem="relaxed")
    else:
        tl.atomic_add(out_ptr + cols.to(tl.int64)[:, None, None] * (bins * bins) + cells[None, :, :], acc,
                      mask=col_ok[:, None, None] & cell_ok[None, :, :], sem="relaxed")


@triton.jit
def _joint_atomic_kernel(x_ptr, y_ptr, ex_ptr, ey_ptr, out_ptr, n_total, chunk, bins,
                         FROM_VALUES: tl.constexpr, LOG_P: tl.constexpr, REPLICAS: tl.constexpr,
                         BLOCK: tl.constexpr):
    """Pooled joint counts into ``out_ptr: (REPLICAS, bins, bins)``.

    Program ``p`` counts ``chunk`` elements into table copy ``p % REPLICAS``.
    """
    pid = tl.program_id(0)
    table = out_ptr + (pid % REPLICAS) * bins * bins
    start = pid * chunk
    for off in range(0, chunk, BLOCK):
        idx = start + off + tl.arange(0, BLOCK)
        mask = idx < n_total
        if FROM_VALUES:  # bin the values here: the codes never touch memory
            cx = _search(tl.load(x_ptr + idx, mask=mask, other=0.0).to(ex_ptr.dtype.element_ty), ex_ptr, 0, LOG_P)
            cy = _search(tl.load(y_ptr + idx, mask=mask, other=0.0).to(ey_ptr.dtype.element_ty), ey_ptr, 0, LOG_P)
        else:
            cx = tl.load(x_ptr + idx, mask=mask, other=0).to(tl.int32)
            cy = tl.load(y_ptr + idx, mask=mask, other=0).to(tl.int32)
        mask = mask & (cx < bins) & (cy < bins)  # never write outside the table
        tl.atomic_add(table + cx * bins + cy, 1, mask=mask, sem="relaxed")


# ----------------------------------------------------------------------------- launchers
def _padded_edges(edges: torch.Tensor, value_dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """Edges ``(..., bins-1)`` in the kernels' compare dtype, padded with +inf to ``2**log_p``.

    Returns ``(edges, log_p)``.
    """
    e64 = edges.to(torch.float64)
    p = triton.next_power_of_2(e64.shape[-1] + 1)
    if value_dtype == torch.float64:
        e = e64
    else:
        e = e64.to(torch.float32)
        # round up: the smallest float32 >= e keeps `e <= v` exact for every float32 v
        e = torch.where(e.to(torch.float64) < e64, torch.nextafter(e, torch.full_like(e, float("inf"))), e)
    pad = torch.full(e.shape[:-1] + (p - e.shape[-1],), float("inf"), dtype=e.dtype, device=e.device)
    return torch.cat([e, pad], -1).contiguous(), p.bit_length() - 1


def _row_ranges(n: int, d: int):
    rows = max(1, LAUNCH_ELEMENTS // d)
    return [(r, min(n, r + rows)) for r in range(0, n, rows)]


def _onehot_shape(bins: int, per_dim: bool) -> tuple[int, int, int, int]:
    """``(BLOCK_D, BLOCK_R, BAND, BP)`` for the one-hot kernel: tables of ``BAND x BP`` for ``BLOCK_D`` columns."""
    bp = max(16, triton.next_power_of_2(bins))  # tl.dot needs dimensions >= 16
    if not per_dim:
        return 1, ONEHOT_TILE // bp, bp, bp
    block_d = max(1, min(16, ACC_CELLS // (bp * bp)))
    band = max(16, min(bp, ACC_CELLS // bp))
    return block_d, 32, band, bp


def _codes(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """uint8 codes of contiguous ``x: (n, d)`` against float64 edges ``(bins-1,)`` or ``(d, bins-1)``."""
    e, log_p = _padded_edges(edges, x.dtype)
    n, d = x.shape
    out = torch.empty((n, d), dtype=torch.uint8, device=x.device)
    for r0, r1 in _row_ranges(n, d):
        part = x[r0:r1]
        grid = (triton.cdiv(part.numel(), CODES_BLOCK),)
        _codes_kernel[grid](part, e, out[r0:r1], part.numel(), d, EDGES_PER_COL=edges.ndim == 2,
                            LOG_P=log_p, BLOCK=CODES_BLOCK)
    return out


def _count_onehot(cx: torch.Tensor, cy: torch.Tensor, bins: int, per_dim: bool) -> torch.Tensor:
    """int32 joint counts of contiguous codes ``(n, d)`` (at most ``LAUNCH_ELEMENTS``) by the one-hot kernel."""
    n, d = cx.shape
    block_d, block_r, band, bp = _onehot_shape(bins, per_dim)
    if per_dim:
        n_rows, n_cols, stride_r = n, d, d
        out = torch.zeros((d, bins, bins), dtype=torch.int32, device=cx.device)
    else:  # pooled: the row-major codes as one long column
        n_rows, n_cols, stride_r = n * d, 1, 1
        out = torch.zeros((bins, bins), dtype=torch.int32, device=cx.device)
    col_tiles, bands = triton.cdiv(n_cols, block_d), bp // band
    splits = max(1, min(target_programs(cx.device) // (col_tiles * bands), triton.cdiv(n_rows, block_r)))
    rows_per_split = triton.cdiv(triton.cdiv(n_rows, splits), block_r) * block_r
    grid = (col_tiles, triton.cdiv(n_rows, rows_per_split), bands)
    _joint_onehot_kernel[grid](cx, cy, out, n_rows, n_cols, stride_r, rows_per_split, bins,
                               POOLED=not per_dim, BLOCK_D=block_d, BLOCK_R=block_r, BAND=band, BP=bp,
                               num_warps=8)
    return out


def _count_atomic(x: torch.Tensor, y: torch.Tensor, bins: int, edges=None) -> torch.Tensor:
    """int32 pooled joint counts of contiguous codes, or of values binned in the kernel.

    ``edges`` is ``None`` for codes, else ``(ex, ey, log_p)`` from ``_padded_edges``.
    """
    ex, ey, log_p = (x, y, 0) if edges is None else edges  # for codes the edge pointers are not read
    total = x.numel()
    programs = max(1, min(target_programs(x.device), triton.cdiv(total, ATOMIC_BLOCK)))
    chunk = triton.cdiv(triton.cdiv(total, programs), ATOMIC_BLOCK) * ATOMIC_BLOCK
    grid = triton.cdiv(total, chunk)
    replicas = min(ATOMIC_REPLICAS, grid)
    tables = torch.zeros((replicas, bins, bins), dtype=torch.int32, device=x.device)
    _joint_atomic_kernel[(grid,)](x, y, ex, ey, tables, total, chunk, bins, FROM_VALUES=edges is not None,
                                  LOG_P=log_p, REPLICAS=replicas, BLOCK=ATOMIC_BLOCK)
    return tables.sum(0, dtype=torch.int32)


def _joint_counts(x, y, bins: int, per_dim: bool, ex=None, ey=None) -> torch.Tensor:
    """int64 joint counts of codes ``x, y: (n, d)``, or of values ``x, y`` binned by edges ``ex, ey``.

    Pooled tables of more than ``ONEHOT_MAX_POOLED_BINS`` bins are counted by the atomic
    kernel, which bins values itself (one read of the values); the others are counted
    from codes by the one-hot kernel, so values are binned first.
    """
    n, d = x.shape
    atomic = not per_dim and bins > ONEHOT_MAX_POOLED_BINS
    edges = None
    if ex is not None:
        if atomic:
            (pex, log_p), (pey, _) = _padded_edges(ex, x.dtype), _padded_edges(ey, y.dtype)
            edges = (pex, pey, log_p)
        else:
            x, y = _codes(x, ex), _codes(y, ey)
    total = None
    for r0, r1 in _row_ranges(n, d):
        xs, ys = x[r0:r1], y[r0:r1]
        part = _count_atomic(xs, ys, bins, edges) if atomic else _count_onehot(xs, ys, bins, per_dim)
        total = part.to(torch.int64) if total is None else total + part
    return total


# ----------------------------------------------------------------------------- public
def _check_values(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a 2-D float tensor (n, d), got "
                         f"{getattr(x, 'shape', type(x).__name__)} {getattr(x, 'dtype', '')}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")


def _check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be an int in 2..{MAX_BINS}, got {bins!r}")
    return bins


def codes_from_edges_triton(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Bin codes of ``x`` against ``edges``, equal to ``miprun.mi.codes.codes_from_edges_ref``.

    Parameters
    ----------
    x : tensor, shape (n, d)
        Values, any float dtype, on CUDA (or CPU under ``TRITON_INTERPRET=1``).
    edges : tensor, float64, shape (bins-1,) or (d, bins-1)
        Non-decreasing edges, over all elements or per column (``compute_edges_triton``).

    Returns
    -------
    tensor, uint8, shape (n, d)
        ``#{j : edges[j] <= v}`` for each value ``v``, in ``0..bins-1``.
    """
    _check_values(x, "x")
    if edges.ndim not in (1, 2) or (edges.ndim == 2 and edges.shape[0] != x.shape[1]):
        raise ValueError(f"edges must have shape (bins-1,) or (d, bins-1) with d={x.shape[1]}, "
                         f"got {tuple(edges.shape)}")
    _check_bins(edges.shape[-1] + 1)
    check_device(x, edges)
    return _codes(x.contiguous(), edges)


def joint_counts_triton(cx: torch.Tensor, cy: torch.Tensor, *, bins: int, per_dim: bool = False) -> torch.Tensor:
    """Joint histogram of paired codes, equal to ``miprun.mi.codes.joint_counts_ref``.

    Parameters
    ----------
    cx, cy : tensor, uint8, shape (n, d)
        Paired bin codes in ``0..bins-1`` (codes outside are not counted).
    bins : int
        Bins per variable, 2..256.
    per_dim : bool
        One table per column instead of one over all ``n * d`` pairs.

    Returns
    -------
    tensor, int64, shape (bins, bins) or (d, bins, bins)
        ``counts[a, b]`` = number of pairs with x-code ``a`` and y-code ``b``.
    """
    bins = _check_bins(bins)
    for name, c in (("cx", cx), ("cy", cy)):
        if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.dtype != torch.uint8:
            raise ValueError(f"{name} must be a 2-D uint8 tensor of codes, got "
                             f"{getattr(c, 'shape', type(c).__name__)} {getattr(c, 'dtype', '')}")
    if cx.shape != cy.shape or cx.numel() == 0:
        raise ValueError(f"cx and cy must have one non-empty shape, got {tuple(cx.shape)} and {tuple(cy.shape)}")
    check_device(cx, cy)
    return _joint_counts(cx.contiguous(), cy.contiguous(), bins, per_dim)


def hist_counts_triton(x: torch.Tensor, y: torch.Tensor, *, bins: int, binning: str = "quantile",
                       reduction: str = "pooled") -> torch.Tensor:
    """Joint bin counts of ``x`` and ``y``, equal to ``miprun.mi.codes.joint_counts_ref`` of their codes.

    Edges of ``x`` and of ``y`` on the device (``compute_edges_triton``), then one fused
    kernel that bins both and counts the joint histogram. The MI of the counts is
    ``miprun.mi.codes.mi_from_counts`` (the estimator layer sits above the kernels).

    Parameters
    ----------
    x, y : tensor, shape (n, d)
        Paired samples, any float dtype, on CUDA (or CPU under ``TRITON_INTERPRET=1``).
    bins : int
        Bins per variable, 2..256 (already resolved from a rule).
    binning : {"quantile", "uniform"}
    reduction : {"pooled", "per_dim"}
        ``pooled``: all ``n * d`` elements are samples of one pair; ``per_dim``: one table
        per column ``j`` of ``x`` and of ``y``.

    Returns
    -------
    tensor, int64, shape (bins, bins) or (d, bins, bins)
    """
    bins = _check_bins(bins)
    if reduction not in ("pooled", "per_dim"):
        raise ValueError(f"hist supports reduction 'pooled' or 'per_dim', got {reduction!r}")
    _check_values(x, "x")
    _check_values(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one shape (n, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    check_device(x, y)
    per_dim = reduction == "per_dim"
    x, y = x.contiguous(), y.contiguous()
    ex = compute_edges_triton(x, bins=bins, binning=binning, per_dim=per_dim)
    ey = compute_edges_triton(y, bins=bins, binning=binning, per_dim=per_dim)
    return _joint_counts(x, y, bins, per_dim, ex, ey)
