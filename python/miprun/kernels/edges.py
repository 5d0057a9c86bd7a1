"""Histogram bin edges on the device, equal to ``miprun.mi.codes.compute_edges_ref``.

Quantile edges are order statistics. For 16-bit floats (bf16, fp16) they are found
exactly without sorting: one Triton pass counts every 16-bit pattern (65536 counters),
and a cumulative sum of the counts locates each order statistic. That is one read of
the data and memory bounded by the counters, whatever the size of ``x`` (a sort of the
``n * d`` elements of a large hidden state needs ``~10 n d`` bytes of scratch). Other
dtypes are sorted in their own dtype (pooled) or column block by column block
(per column); converting the picked values to float64 afterwards gives the same edges
as sorting float64 copies, because the conversion is exact and monotone.

Uniform edges use ``aminmax`` in the input dtype and the reference's float64 formula.
"""

from __future__ import annotations

import torch

from miprun.kernels._triton import check_device, program_count, tl, triton

__all__ = ["compute_edges_triton"]

KEY_COUNT = 1 << 16  # distinct 16-bit patterns
SORT_CHUNK_ELEMENTS = 1 << 24  # per-column sorts handle this many elements at a time
LAUNCH_ELEMENTS = 1 << 30  # elements per counting launch: int32 offsets and counts stay exact
_REPLICAS = 16  # copies of the 65536 counters; programs spread their atomics over them
_BLOCK = 1024


@triton.jit
def _key_count_kernel(bits_ptr, counts_ptr, n_total, chunk, REPLICAS: tl.constexpr, BLOCK: tl.constexpr):
    """Count order keys of 16-bit float patterns ``bits_ptr: (n_total,) int16`` into ``counts_ptr: (REPLICAS, 65536)``.

    The key of a pattern sorts like its float value: negative patterns are inverted,
    positive ones get the top bit set (-0.0 lands just below +0.0; both compare equal).
    """
    pid = tl.program_id(0)
    table = counts_ptr + (pid % REPLICAS) * 65536
    start = pid * chunk
    for off in range(0, chunk, BLOCK):
        idx = start + off + tl.arange(0, BLOCK)
        mask = idx < n_total
        b = tl.load(bits_ptr + idx, mask=mask, other=0).to(tl.int32) & 0xFFFF
        key = tl.where((b & 0x8000) != 0, (~b) & 0xFFFF, b | 0x8000)
        tl.atomic_add(table + key, 1, mask=mask, sem="relaxed")


def _keys_to_values(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Invert the order key of ``_key_count_kernel``: int64 keys -> values of ``dtype`` as float64."""
    bits = torch.where(keys >= 0x8000, keys & 0x7FFF, (~keys) & 0xFFFF)
    bits = torch.where(bits >= 0x8000, bits - 0x10000, bits)  # to the signed int16 range
    return bits.to(torch.int16).view(dtype).to(torch.float64)


def _quantile_ranks(n: int, bins: int, device) -> torch.Tensor:
    # the reference's ranks floor(j n / bins), j = 1..bins-1, with the same float64 arithmetic
    j = torch.arange(1, bins, dtype=torch.float64, device=device)
    return (j * n / bins).floor().long().clamp_(0, n - 1)


def _quantile_edges_16bit(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Pooled quantile edges of a bf16/fp16 tensor by counting its 16-bit patterns: float64 ``(bins-1,)``."""
    flat = x.reshape(-1)
    n = flat.numel()
    counts = torch.zeros((_REPLICAS, KEY_COUNT), dtype=torch.int32, device=x.device)
    total = torch.zeros(KEY_COUNT, dtype=torch.int64, device=x.device)
    for s in range(0, n, LAUNCH_ELEMENTS):
        part = flat[s:s + LAUNCH_ELEMENTS].view(torch.int16)
        programs = program_count(x.device, part.numel(), _BLOCK)
        chunk = triton.cdiv(triton.cdiv(part.numel(), programs), _BLOCK) * _BLOCK
        counts.zero_()
        _key_count_kernel[(triton.cdiv(part.numel(), chunk),)](part, counts, part.numel(), chunk,
                                                              REPLICAS=_REPLICAS, BLOCK=_BLOCK)
        total += counts.sum(0, dtype=torch.int64)
    cum = torch.cumsum(total, 0)  # cum[key] = number of elements with a key <= key
    ranks = _quantile_ranks(n, bins, x.device)
    keys = torch.searchsorted(cum, ranks, right=True)  # first key holding more than `rank` elements
    return _keys_to_values(keys, x.dtype)


def _quantile_edges_sorted(x: torch.Tensor, bins: int, per_dim: bool) -> torch.Tensor:
    """Quantile edges by sorting in the input dtype: float64 ``(bins-1,)`` or ``(d, bins-1)``."""
    if not per_dim:
        flat = x.reshape(-1)
        s = torch.sort(flat).values
        return s[_quantile_ranks(flat.numel(), bins, x.device)].to(torch.float64)
    n, d = x.shape
    ranks = _quantile_ranks(n, bins, x.device)
    out = torch.empty((d, bins - 1), dtype=torch.float64, device=x.device)
    cols = max(1, SORT_CHUNK_ELEMENTS // n)  # bounds the sort's scratch (values + int64 indices)
    for c in range(0, d, cols):
        s = torch.sort(x[:, c:c + cols], dim=0).values  # (n, cols)
        out[c:c + cols] = s[ranks].t().to(torch.float64)
    return out


def _uniform_edges(x: torch.Tensor, bins: int, per_dim: bool) -> torch.Tensor:
    """Equal-width edges, the reference's ``lo + (hi - lo) * j / bins`` in float64."""
    if per_dim:
        lo, hi = torch.aminmax(x, dim=0)
        lo, hi = lo.to(torch.float64)[:, None], hi.to(torch.float64)[:, None]  # (d, 1)
    else:
        lo, hi = torch.aminmax(x)
        lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    j = torch.arange(1, bins, dtype=torch.float64, device=x.device)
    return lo + (hi - lo) * j / bins


def compute_edges_triton(x: torch.Tensor, *, bins: int, binning: str = "quantile",
                         per_dim: bool = False) -> torch.Tensor:
    """Bin edges of ``x: (n, d)`` on its device, equal to ``miprun.mi.codes.compute_edges_ref``.

    Parameters
    ----------
    x : tensor, shape (n, d)
        Finite values, any float dtype (bf16, fp16, fp32, fp64).
    bins : int
        Bins per variable, 2..256.
    binning : {"quantile", "uniform"}
    per_dim : bool
        Edges per column instead of over all ``n * d`` elements.

    Returns
    -------
    tensor, float64, shape (bins-1,) or (d, bins-1)
        Non-decreasing edges on ``x``'s device; a value ``v`` gets the code ``#{edges <= v}``.
    """
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"x must be a 2-D float tensor (n, d), got shape {tuple(x.shape)} and dtype {x.dtype}")
    if not 2 <= int(bins) <= 256:
        raise ValueError(f"bins must be between 2 and 256, got {bins}")
    check_device(x)
    if binning == "uniform":
        return _uniform_edges(x, bins, per_dim)
    if binning != "quantile":
        raise ValueError(f"binning must be 'quantile' or 'uniform', got {binning!r}")
    x = x.contiguous()
    if not per_dim and x.dtype in (torch.bfloat16, torch.float16):
        return _quantile_edges_16bit(x, bins)
    return _quantile_edges_sorted(x, bins, per_dim)
