"""The native core against the float64 reference, on random shapes, dtypes and data.

The core widens every input to float64 exactly (bf16/fp16 through float32) and computes
edges, codes and counts with the reference's own comparisons and arithmetic, so those are
identical, not close: no boundary differences are allowed, for uniform bins either. MI
values differ only by the order of float64 sums (<1e-12 observed), held to 1e-9.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from miprun import mutual_information
from miprun.mi import codes as C
from miprun.mi.ksg import ksg_points_ref
from support import requires_native

pytestmark = requires_native

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = [(1, 1), (2, 3), (7, 1), (64, 5), (257, 13), (1000, 2)]
MI_TOL = 1e-9


def sample(shape, dtype, seed, kind="normal"):
    """Correlated ``x, y`` of ``shape`` in ``dtype``: normal, heavy-tailed (t, 2 dof, outlier
    columns), or tie-heavy (rounded to a few values, with +0.0 and -0.0)."""
    g = torch.Generator().manual_seed(seed)
    n, d = shape
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if kind == "heavy":
        w = torch.rand(n, 1, generator=g, dtype=torch.float64).clamp(1e-3, 0.99)
        x = x / torch.sqrt(-torch.log(w))  # scale mixture: heavy tails, at most 10x a normal
        x[:, : max(1, d // 8)] *= 300.0  # massive-activation columns (still finite in float16)
    y = 0.7 * x + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64) * x.abs().mean()
    if kind == "ties":
        x = torch.round(x * 2) / 2
        y = torch.round(y)
        x[x == 0] = -0.0
    return x.to(dtype), y.to(dtype)


def assert_same_steps(x, bins, binning, per_dim):
    e_ref = C.compute_edges_ref(x, bins, binning, per_dim)
    e_nat = C.compute_edges(x, bins=bins, binning=binning, per_dim=per_dim, backend="native")
    assert e_nat.dtype == torch.float64 and e_nat.shape == e_ref.shape
    assert torch.equal(e_nat, e_ref)
    c_ref = C.codes_from_edges_ref(x, e_ref)
    c_nat = C.codes_from_edges(x, e_ref, backend="native")
    assert c_nat.dtype == torch.uint8 and c_nat.shape == c_ref.shape
    assert torch.equal(c_nat, c_ref)
    return c_ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["normal", "heavy", "ties"])
def test_edges_codes_counts_identical(dtype, shape, kind):
    x, y = sample(shape, dtype, seed=hash((shape, kind)) % 1000, kind=kind)
    for bins in (2, 7, 64, 256):
        for binning in ("quantile", "uniform"):
            for per_dim in (False, True):
                cx = assert_same_steps(x, bins, binning, per_dim)
                cy = assert_same_steps(y, bins, binning, per_dim)
                j_ref = C.joint_counts_ref(cx, cy, bins, per_dim)
                j_nat = C.joint_counts(cx, cy, bins=bins, per_dim=per_dim, backend="native")
                assert j_nat.dtype == torch.int64 and torch.equal(j_nat, j_ref)


@pytest.mark.parametrize(("dtype", "kind"), [(torch.float32, "normal"), (torch.float64, "heavy"),
                                             (torch.bfloat16, "ties"), (torch.float64, "ties")])
def test_large_pooled_paths_identical(dtype, kind):
    """Above 2^16 elements the core codes by table lookup and above 2^18 selects edges by radix."""
    x, y = sample((520, 512), dtype, seed=5, kind=kind)
    for bins in (3, 256):
        for binning in ("quantile", "uniform"):
            cx = assert_same_steps(x, bins, binning, per_dim=False)
            cy = assert_same_steps(y, bins, binning, per_dim=False)
            assert torch.equal(C.joint_counts(cx, cy, bins=bins, backend="native"), C.joint_counts_ref(cx, cy, bins, False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_codes_of_extreme_values(dtype):
    """Signed zeros, subnormals, the largest values, and values at, just below and just above
    every edge; enough of them for the lookup-table path and a few for the binary search."""
    big = float(torch.finfo(dtype).max)
    tiny = float(torch.finfo(dtype).smallest_normal) / 4  # subnormal in dtype
    edges = torch.tensor([-big / 2, -1.0, -0.0, 0.0, tiny, 2 * tiny, 1.0, 3.0, 3.0, big / 2], dtype=torch.float64)
    e = edges.to(dtype)
    near = torch.cat([e, torch.nextafter(e, torch.full_like(e, -math.inf)), torch.nextafter(e, torch.full_like(e, math.inf)),
                      torch.tensor([-big, big, -0.0, 0.0], dtype=dtype)])
    assert bool(torch.isfinite(near).all())
    x = near.repeat(70_000 // near.numel() + 1)[:, None]
    assert torch.equal(C.codes_from_edges(x, edges, backend="native"), C.codes_from_edges_ref(x, edges))
    assert torch.equal(C.codes_from_edges(x[:50], edges, backend="native"), C.codes_from_edges_ref(x[:50], edges))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 2), (200, 6), (1500, 3), (600, 500)])
def test_hist_mi_matches_reference(dtype, shape):
    x, y = sample(shape, dtype, seed=shape[0], kind="heavy")
    for reduction in ("pooled", "per_dim"):
        if reduction == "per_dim" and shape[1] > 50:
            continue  # the reference loops over columns in Python
        for binning in ("quantile", "uniform"):
            for bc in (None, "miller_madow"):
                kw = dict(estimator="hist", reduction=reduction, binning=binning, bias_correction=bc, bins="auto")
                ref = mutual_information(x, y, backend="reference", **kw)
                nat = mutual_information(x, y, backend="native", **kw)
                assert math.isfinite(nat)
                assert nat == pytest.approx(ref, abs=MI_TOL)


def test_mi_from_counts_matches_reference():
    from miprun import _core
    g = torch.Generator().manual_seed(3)
    counts = torch.randint(0, 50, (6, 9, 11), generator=g)
    counts[:, 2, :] = 0  # an empty row
    for mm in (False, True):
        assert _core.mi_from_counts(counts[0].numpy(), mm) == pytest.approx(C.mi_from_counts(counts[0], miller_madow=mm), abs=MI_TOL)
        assert _core.mi_from_counts(counts.numpy(), mm) == pytest.approx(C.mi_from_counts(counts, miller_madow=mm), abs=MI_TOL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 1), (50, 4), (3000, 7), (600, 500)])
def test_gaussian_matches_reference(dtype, shape):
    x, y = sample(shape, dtype, seed=7, kind="heavy")
    for reduction in ("pooled", "per_dim"):
        ref = mutual_information(x, y, estimator="gaussian", reduction=reduction, backend="reference")
        nat = mutual_information(x, y, estimator="gaussian", reduction=reduction, backend="native")
        assert nat == pytest.approx(ref, abs=MI_TOL, rel=1e-12)


@pytest.mark.parametrize(("m", "k", "ties"), [(m, k, t) for m in (8, 100, 1000) for k in (1, 3, 6) for t in (False, True)]
                         + [(5000, 3, True)])  # above 4096 points the scan runs on all threads
def test_ksg_scalar_points_match_reference(m, k, ties):
    """The scalar path (slab search, galloping counts) against brute force, on raw points with ties."""
    from miprun.mi.cpu import ksg_points_cpu
    rng = np.random.default_rng(m * 10 + k)
    x = rng.standard_normal(m)
    y = 0.6 * x + rng.standard_t(2, m)
    if ties:  # exact ties in x, in y and in both: distances tie, counts sit on the boundary
        x[: m // 2] = np.round(x[: m // 2], 1)
        y[m // 4:] = np.round(y[m // 4:], 1)
    xt, yt = torch.from_numpy(x)[:, None], torch.from_numpy(y)[:, None]
    ref = ksg_points_ref(xt, yt, k)
    nat = ksg_points_cpu(xt, yt, k)
    if math.isinf(ref):  # tied duplicates beyond k give eps = 0 and psi(0): both must say so
        assert nat == ref
    else:
        assert nat == pytest.approx(ref, abs=MI_TOL)


@pytest.mark.parametrize(("dx", "dy"), [(2, 2), (3, 1), (1, 4)])
@pytest.mark.parametrize("k", [1, 4])
def test_ksg_multivariate_points_match_reference(dx, dy, k):
    from miprun.mi.cpu import ksg_points_cpu
    g = torch.Generator().manual_seed(dx * 7 + dy + k)
    x = torch.randn(700, dx, generator=g, dtype=torch.float64)
    y = x[:, :1] * 0.8 + torch.randn(700, dy, generator=g, dtype=torch.float64)
    assert ksg_points_cpu(x, y, k) == pytest.approx(ksg_points_ref(x, y, k), abs=MI_TOL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["pooled", "per_dim", "projection"])
def test_ksg_public_matches_reference(dtype, reduction):
    """Both backends share the subsample, projection and jitter; only the core differs."""
    x, y = sample((900, 6), dtype, seed=21, kind="normal")
    kw = dict(estimator="ksg", reduction=reduction, k=3, seed=4, max_samples=2000 if reduction == "pooled" else None)
    ref = mutual_information(x, y, backend="reference", **kw)
    nat = mutual_information(x, y, backend="native", **kw)
    assert ref > 0.05
    assert nat == pytest.approx(ref, abs=MI_TOL)


def test_ksg_per_dim_is_the_mean_of_column_estimates():
    from miprun.mi.cpu import ksg_per_dim_cpu
    g = torch.Generator().manual_seed(8)
    x = torch.randn(300, 9, generator=g, dtype=torch.float64)
    y = 0.5 * x + torch.randn(300, 9, generator=g, dtype=torch.float64)
    ref = np.mean([ksg_points_ref(x[:, j:j + 1], y[:, j:j + 1], 3) for j in range(9)])
    assert ksg_per_dim_cpu(x, y, 3) == pytest.approx(float(ref), abs=MI_TOL)
