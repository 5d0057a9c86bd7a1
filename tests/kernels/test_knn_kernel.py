"""KSG Triton kernels against the float64 reference ``miprun.mi.ksg.ksg_points_ref``.

The kernels compute the reference's float64 keys exactly (distances for the max-norm,
squared distances added in column order for the Euclidean norm), so ``eps`` and the
marginal counts are identical and the estimate differs only by the float64 summation
order of the digamma terms: tolerance ``1e-12`` nats.
"""

from __future__ import annotations

import math
import os
import secrets

import pytest
import torch
from support import requires_cuda

from miprun.mi.ksg import keys_ref, ksg_points_ref, prepare, standardize_jitter

triton = pytest.importorskip("triton", reason="triton is not installed")
from miprun.kernels import knn  # noqa: E402

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                                 reason="CPU tensors run Triton kernels only with TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=requires_cuda),
]
KSG_TOL = 1e-12  # nats
METRICS = ["euclidean", "chebyshev"]


def _points(m, dx, dy, seed):
    """Prepared (standardised, jittered) continuous points with dependence between x and y."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, dx, generator=g, dtype=torch.float64)
    y = 0.7 * x[:, :1].expand(m, dy) + 0.5 * torch.randn(m, dy, generator=g, dtype=torch.float64)
    return standardize_jitter(x, seed + 1), standardize_jitter(y, seed + 2)


def _counts_ref(x, y, k, metric="chebyshev"):
    """float64 ``eps, n_x, n_y`` with the reference's definitions (self excluded, strict <).

    ``eps``: the ``k``-th joint key (a squared distance for the Euclidean norm).
    """
    if x.shape[1] == 1 and y.shape[1] == 1:
        metric = "chebyshev"  # one column each: the same distance, computed as the max-norm
    dx = keys_ref(x, x, metric)
    dy = keys_ref(y, y, metric)
    dz = torch.maximum(dx, dy)
    dz.fill_diagonal_(float("inf"))
    eps = torch.kthvalue(dz, k, dim=1).values
    return eps, (dx < eps[:, None]).sum(1) - 1, (dy < eps[:, None]).sum(1) - 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("m,dx,dy,k", [(7, 1, 1, 3), (300, 1, 1, 3), (301, 2, 3, 4), (150, 4, 4, 1),
                                       (97, 1, 2, 6), (390, 3, 1, 10)])
def test_ksg_points_equal_reference(device, m, dx, dy, k, metric):
    # m not a multiple of the tiles (32/64 on GPU, 128/256 in the interpreter); k = 6, 10
    # leave unused slots in the power-of-two neighbour set
    x, y = _points(m, dx, dy, seed=m + k)
    eps, n_x, n_y = knn.ksg_counts_triton(x.to(device), y.to(device), k, metric=metric)
    eps_r, nx_r, ny_r = _counts_ref(x, y, k, metric)
    assert torch.equal(eps[0].cpu(), eps_r)
    assert torch.equal(n_x[0].cpu().long(), nx_r) and torch.equal(n_y[0].cpu().long(), ny_r)
    got = knn.ksg_points_triton(x.to(device), y.to(device), k, metric=metric)
    assert abs(got - ksg_points_ref(x, y, k, metric=metric)) <= KSG_TOL


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,dx,dy,k", [(170, 3, 2, 3), (133, 1, 4, 2), (150, 5, 1, 5)])
def test_euclidean_counts_equal_reference_on_fresh_inputs(device, m, dx, dy, k):
    seed = secrets.randbelow(2**31)
    x, y = _points(m, dx, dy, seed=seed)
    eps, n_x, n_y = knn.ksg_counts_triton(x.to(device), y.to(device), k, metric="euclidean")
    eps_r, nx_r, ny_r = _counts_ref(x, y, k, "euclidean")
    assert torch.equal(eps[0].cpu(), eps_r), f"seed={seed}"
    assert torch.equal(n_x[0].cpu().long(), nx_r) and torch.equal(n_y[0].cpu().long(), ny_r), f"seed={seed}"
    # the Euclidean counts differ from the max-norm's: the norm reached the kernels
    _, nx_c, _ = _counts_ref(x, y, k, "chebyshev")
    assert not torch.equal(nx_r, nx_c), f"seed={seed}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dx,dy", [(1, 1), (2, 3)])
def test_ksg_points_ties_follow_reference(device, metric, dx, dy):
    # x on a coarse grid (many exact ties, no jitter): the k-th distance counts duplicates
    # like kthvalue and the marginal counts stay strict
    g = torch.Generator().manual_seed(11)
    x = torch.round(4 * torch.randn(200, dx, generator=g, dtype=torch.float64)) / 4
    y = torch.round(4 * (x[:, :1] + torch.randn(200, dy, generator=g, dtype=torch.float64))) / 4
    eps, n_x, n_y = knn.ksg_counts_triton(x.to(device), y.to(device), 3, metric=metric)
    eps_r, nx_r, ny_r = _counts_ref(x, y, 3, metric)
    assert torch.equal(eps[0].cpu(), eps_r)
    assert torch.equal(n_x[0].cpu().long(), nx_r) and torch.equal(n_y[0].cpu().long(), ny_r)
    got = knn.ksg_points_triton(x.to(device), y.to(device), 3, metric=metric)
    ref = ksg_points_ref(x, y, 3, metric=metric)
    assert got == ref if math.isinf(ref) else abs(got - ref) <= KSG_TOL


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,k", [(torch.float32, 1), (torch.bfloat16, 3)])
def test_ksg_per_dim_equals_reference(device, dtype, k):
    g = torch.Generator().manual_seed(12)
    x = torch.randn(271, 4, generator=g).to(dtype)  # bf16 values tie; prepare's jitter separates them
    y = (x.float() + torch.randn(271, 4, generator=g) * torch.linspace(0.2, 3, 4)).to(dtype)
    xs, ys = prepare(x, y, reduction="per_dim", max_samples=None, seed=0)
    got = knn.ksg_per_dim_triton(xs.to(device), ys.to(device), k)
    ref = sum(ksg_points_ref(xs[:, j:j + 1], ys[:, j:j + 1], k) for j in range(4)) / 4
    assert abs(got - ref) <= KSG_TOL


@pytest.mark.parametrize("device", DEVICES)
def test_public_triton_backend_on_bivariate_normal(device):
    import miprun

    rho = 0.8
    truth = -0.5 * math.log(1 - rho ** 2)  # 0.511 nats
    g = torch.Generator().manual_seed(13)
    x = torch.randn(500, 2, generator=g, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho ** 2) * torch.randn(500, 2, generator=g, dtype=torch.float64)
    for reduction in ("pooled", "per_dim", "projection", "joint"):
        got = miprun.mutual_information(x.to(device), y.to(device), estimator="ksg", reduction=reduction,
                                        backend="triton")
        # the reference on the same device: the tie-breaking jitter comes from that device's generator
        ref = miprun.mutual_information(x.to(device), y.to(device), estimator="ksg", reduction=reduction,
                                        backend="reference")
        assert abs(got - ref) <= KSG_TOL, reduction
        if reduction in ("pooled", "per_dim"):  # projection mixes the columns; joint is twice the pair's MI
            # KSG's standard deviation at 500-1000 samples is about 0.04 nats here
            assert abs(got - truth) < 0.12, (reduction, got)
        if reduction == "joint":  # two independent pairs: MI adds up; KSG in 4 dimensions is biased low
            assert abs(got - 2 * truth) < 0.2, (reduction, got)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", [None, *METRICS])
@pytest.mark.parametrize("m,dx,dy,k", [(257, 1, 3, 3), (300, 4, 2, 5), (129, 7, 6, 2), (200, 2, 1, 1)])
def test_joint_ksg_equals_reference(device, m, dx, dy, k, metric):
    """reduction="joint" on the device: every column, every row, the kernel's exact neighbours."""
    import miprun

    seed = m + dx + dy + k
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, dx, generator=g, dtype=torch.float64)
    y = torch.tanh(x.sum(1, keepdim=True)) + 0.6 * torch.randn(m, dy, generator=g, dtype=torch.float64)
    kw = dict(estimator="ksg", reduction="joint", k=k, seed=seed, metric=metric)
    got = miprun.mutual_information(x.to(device), y.to(device), backend="triton", **kw)
    ref = miprun.mutual_information(x.to(device), y.to(device), backend="reference", **kw)
    assert ref > 0.05, f"seed={seed}"
    assert abs(got - ref) <= KSG_TOL, f"seed={seed} got={got} ref={ref}"


@pytest.mark.parametrize("device", DEVICES)
def test_invalid_arguments_raise(device):
    x = torch.randn(10, 2, dtype=torch.float64, device=device)
    with pytest.raises(ValueError, match="same points"):
        knn.ksg_points_triton(x, x[:5], 3)
    with pytest.raises(ValueError, match="needs at least"):
        knn.ksg_points_triton(x[:3], x[:3], 3)
    with pytest.raises(ValueError, match="positive int"):
        knn.ksg_points_triton(x, x, 0)
    with pytest.raises(ValueError, match="per_dim"):
        knn.ksg_per_dim_triton(x, x[:, :1], 3)
    with pytest.raises(ValueError, match=r"metric must be one of \('chebyshev', 'euclidean'\), got 'l2'"):
        knn.ksg_points_triton(x, x, 3, metric="l2")
