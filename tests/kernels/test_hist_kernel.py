"""Histogram Triton kernels against their float64 references (``miprun.mi.codes``, ``hist_ref``).

Codes and counts must be identical to the reference: the kernels compare in float32
against edges rounded up to float32, which is exact for every bf16/fp16/fp32 value (see
``miprun.kernels.hist``), so no boundary slack is allowed, even for uniform binning in
low precision. MI then differs from ``hist_ref`` only by float64 summation order:
tolerance ``1e-12`` nats.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from support import requires_cuda

from miprun.mi.codes import codes_from_edges_ref, compute_edges_ref, joint_counts_ref
from miprun.mi.codes import mi_from_counts
from miprun.mi.hist import hist_ref

triton = pytest.importorskip("triton", reason="triton is not installed")
from miprun.kernels import edges as kedges  # noqa: E402
from miprun.kernels import hist as khist  # noqa: E402

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                                 reason="CPU tensors run Triton kernels only with TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=requires_cuda),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
MI_TOL = 1e-12  # nats: identical counts, different float64 summation order


def _pair(n, d, dtype, device, seed, noise=0.7):
    """Correlated ``x, y: (n, d)`` with heavy-ish tails and ties from the low-precision cast."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x = x * torch.exp(0.5 * torch.randn(1, d, generator=g, dtype=torch.float64))  # columns on different scales
    y = x + noise * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.to(dtype).to(device), y.to(dtype).to(device)


# ----------------------------------------------------------------------------- edges
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_dim", [False, True])
@pytest.mark.parametrize("binning", ["quantile", "uniform"])
def test_edges_equal_reference(device, dtype, per_dim, binning):
    x, _ = _pair(389, 5, dtype, device, seed=1)
    x[::7, 0] = -0.0  # signed zeros and ties must not move an edge
    x[3::7, 0] = 0.0
    for bins in (2, 17, 256):
        got = kedges.compute_edges_triton(x, bins=bins, binning=binning, per_dim=per_dim)
        ref = compute_edges_ref(x.cpu(), bins, binning, per_dim)
        assert got.dtype == torch.float64 and got.shape == ref.shape
        assert torch.equal(got.cpu(), ref), (bins, (got.cpu() - ref).abs().max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_quantile_edges_across_launches(device, dtype, monkeypatch):
    # the counting pass is split into launches of LAUNCH_ELEMENTS; shrink it to cover the merge
    monkeypatch.setattr(kedges, "LAUNCH_ELEMENTS", 1000)
    x, _ = _pair(613, 4, dtype, device, seed=2)
    got = kedges.compute_edges_triton(x, bins=31, binning="quantile")
    assert torch.equal(got.cpu(), compute_edges_ref(x.cpu(), 31, "quantile", False))


# ----------------------------------------------------------------------------- codes
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_dim", [False, True])
@pytest.mark.parametrize("binning", ["quantile", "uniform"])
def test_codes_equal_reference(device, dtype, per_dim, binning):
    x, _ = _pair(517, 7, dtype, device, seed=3)  # 3619 elements: not a multiple of the block
    for bins in (3, 64, 200):
        edges = compute_edges_ref(x.cpu(), bins, binning, per_dim).to(device)
        got = khist.codes_from_edges_triton(x, edges)
        assert got.dtype == torch.uint8 and got.shape == x.shape
        assert torch.equal(got.cpu(), codes_from_edges_ref(x.cpu(), edges.cpu())), bins


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_codes_exact_at_float32_rounding_of_edges(device, dtype):
    # edges a hair above, at and below representable values: rounding an edge to the
    # nearest float32 instead of up would put values equal to that float32 in the wrong bin
    g = torch.Generator().manual_seed(4)
    v = torch.randn(300, 3, generator=g).to(dtype)
    base = torch.sort(v.to(torch.float64).reshape(-1)).values[::40][:8]
    edges = torch.sort(torch.cat([base * (1 + 1e-12), base, base * (1 - 1e-12), base + 1e-30])).values
    got = khist.codes_from_edges_triton(v.to(device), edges.to(device))
    ref = codes_from_edges_ref(v, edges)
    assert torch.equal(got.cpu(), ref)
    assert len(torch.unique(ref)) > 10  # the values really straddle the edges


# ----------------------------------------------------------------------------- counts
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_dim", [False, True])
@pytest.mark.parametrize("bins,shape", [(2, (301, 5)), (16, (1000, 3)), (37, (333, 17)), (64, (257, 4)),
                                        (100, (411, 3)), (256, (97, 2))])
def test_joint_counts_equal_reference(device, per_dim, bins, shape):
    # bins <= 64 pooled and every per_dim case use the one-hot kernel (bins 256: 16 bands);
    # pooled bins > 64 use the replicated-table kernel
    g = torch.Generator().manual_seed(bins)
    cx = torch.randint(0, bins, shape, generator=g, dtype=torch.uint8)
    cy = ((cx.long() + torch.randint(0, 3, shape, generator=g)) % bins).to(torch.uint8)  # correlated
    got = khist.joint_counts_triton(cx.to(device), cy.to(device), bins=bins, per_dim=per_dim)
    ref = joint_counts_ref(cx, cy, bins, per_dim)
    assert got.dtype == torch.int64 and got.shape == ref.shape
    assert torch.equal(got.cpu(), ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_dim,bins", [(False, 16), (False, 100), (True, 16)])
def test_joint_counts_across_launches(device, per_dim, bins, monkeypatch):
    monkeypatch.setattr(khist, "LAUNCH_ELEMENTS", 700)  # several launches, summed in int64
    g = torch.Generator().manual_seed(5)
    cx = torch.randint(0, bins, (450, 6), generator=g, dtype=torch.uint8)
    cy = torch.randint(0, bins, (450, 6), generator=g, dtype=torch.uint8)
    got = khist.joint_counts_triton(cx.to(device), cy.to(device), bins=bins, per_dim=per_dim)
    assert torch.equal(got.cpu(), joint_counts_ref(cx, cy, bins, per_dim))


# ----------------------------------------------------------------------------- MI
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["pooled", "per_dim"])
@pytest.mark.parametrize("binning", ["quantile", "uniform"])
def test_hist_equals_reference(device, dtype, reduction, binning):
    x, y = _pair(259, 6, dtype, device, seed=6)
    # pooled 100 bins runs the fused replicated-table kernel; the others codes + one-hot
    cases = [(9, False), (100, True)] if reduction == "pooled" else [(9, True), (23, False)]
    for bins, miller_madow in cases:
        got = mi_from_counts(khist.hist_counts_triton(x, y, bins=bins, binning=binning, reduction=reduction),
                             miller_madow=miller_madow)
        ref = hist_ref(x.cpu(), y.cpu(), bins=bins, binning=binning, reduction=reduction,
                       bias_correction="miller_madow" if miller_madow else None)
        assert abs(got - ref) <= MI_TOL, (bins, got, ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["pooled", "per_dim"])
def test_low_precision_error_bounded_by_reference_error(device, dtype, reduction):
    # error against the float64 data is at most twice the reference's own error at this precision
    x64, y64 = _pair(400, 5, torch.float64, "cpu", seed=7)
    exact = hist_ref(x64, y64, bins=12, binning="uniform", reduction=reduction)
    ref_low = hist_ref(x64.to(dtype), y64.to(dtype), bins=12, binning="uniform", reduction=reduction)
    got = mi_from_counts(khist.hist_counts_triton(x64.to(dtype).to(device), y64.to(dtype).to(device), bins=12,
                                                  binning="uniform", reduction=reduction))
    assert abs(got - exact) <= 2 * abs(ref_low - exact) + MI_TOL


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias_correction", [None, "miller_madow"])
def test_public_triton_backend_on_bivariate_normal(device, bias_correction):
    import miprun

    rho = 0.8
    truth = -0.5 * math.log(1 - rho ** 2)  # 0.511 nats
    g = torch.Generator().manual_seed(8)
    x = torch.randn(20000, generator=g, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho ** 2) * torch.randn(20000, generator=g, dtype=torch.float64)
    got = miprun.mutual_information(x.to(device), y.to(device), estimator="hist", backend="triton",
                                    bias_correction=bias_correction)
    ref = miprun.mutual_information(x, y, estimator="hist", backend="reference", bias_correction=bias_correction)
    assert abs(got - ref) <= MI_TOL
    # 28 quantile bins over 20000 pairs: plug-in bias and binning loss stay within 0.03 nats
    assert abs(got - truth) < 0.03, got


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("device", DEVICES)
def test_invalid_arguments_raise(device):
    x = torch.randn(10, 2, device=device)
    with pytest.raises(ValueError, match="bins must be an int"):
        khist.hist_counts_triton(x, x, bins=300)
    with pytest.raises(ValueError, match="one shape"):
        khist.hist_counts_triton(x, x[:, :1], bins=4)
    with pytest.raises(ValueError, match="reduction"):
        khist.hist_counts_triton(x, x, bins=4, reduction="projection")
    with pytest.raises(ValueError, match="binning"):
        khist.hist_counts_triton(x, x, bins=4, binning="kmeans")
    with pytest.raises(ValueError, match="uint8"):
        khist.joint_counts_triton(x, x, bins=4)
    with pytest.raises(ValueError, match=r"\(d, bins-1\)"):
        khist.codes_from_edges_triton(x, torch.zeros(3, 4, dtype=torch.float64, device=device))


# ----------------------------------------------------------------------------- joint histogram
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("dx", "dy"), [(2, 2), (1, 3), (2, 1)])
def test_joint_hist_equals_reference(device, dtype, dx, dy):
    """reduction="joint": edges and codes per column on the device, the same cells as the reference."""
    import miprun

    x, y = _pair(1500, 2, dtype, device, seed=dx * 10 + dy)
    x, y = x[:, :dx], y[:, :dy] if dy <= 2 else torch.cat([y, y[:, :1] * 0.5 + x[:, 1:2]], 1)[:, :dy]
    for bins, binning, bc in (("auto", "quantile", None), (9, "uniform", "miller_madow")):
        kw = dict(estimator="hist", reduction="joint", bins=bins, binning=binning, bias_correction=bc)
        got = miprun.mutual_information(x, y, backend="triton", **kw)
        ref = miprun.mutual_information(x.cpu(), y.cpu(), backend="reference", **kw)
        assert ref > 0.05
        assert abs(got - ref) <= MI_TOL, (bins, binning, got, ref)
