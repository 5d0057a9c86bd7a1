"""reduction="joint": the MI between x (n, dx) and y (n, dy) as random vectors.

The native KSG search is held to the float64 reference (same eps and counts, so equal to
summation order) on fresh random inputs of many shapes, ties included; every estimator is
checked against the closed-form MI of Gaussian vectors whose dependence is spread over all
columns, so dropping or mixing up a column gives an error far above the tolerance.
Tolerances are sampling error measured over 12 seeds and widened to about 4 standard
deviations, plus the estimator's bias where it has one. Seeds are in the failure messages.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from miprun import mutual_information
from miprun.mi.hist import mi_from_joint_counts_ref
from miprun.mi.hist_joint import JOINT_HIST_MAX_DIMS, joint_bins, mi_from_cells
from miprun.mi.ksg import ksg_points_ref, prepare
from support import requires_native, spread_gaussian

BACKENDS = ["reference", pytest.param("native", marks=requires_native)]
METRICS = ["euclidean", "chebyshev"]
MI_TOL = 1e-9  # native against reference: the same eps and counts, summed in another order


# ----------------------------------------------------------------------------- native = reference
# the k-d tree in the joint space, except (300, 100, 40) and (250, 1, 130): the sorted scan
# of the max-norm (more than 128 coordinates in a space; the Euclidean norm always uses the
# tree); dx = 1 or dy = 1: the sorted marginal counts
@requires_native
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("m", "dx", "dy", "k"), [(400, 2, 1, 1), (700, 1, 3, 3), (900, 3, 5, 5), (1200, 5, 5, 3),
                                                  (500, 13, 11, 4), (600, 20, 10, 3), (500, 1, 30, 2),
                                                  (2500, 4, 2, 6), (300, 100, 40, 3), (250, 1, 130, 2)])
def test_joint_ksg_native_equals_reference(m, dx, dy, k, metric):
    from miprun.mi.cpu import ksg_points_cpu
    seed = m + 10 * dx + dy + k
    x, y, _ = spread_gaussian(m, dx, dy, 0.8, seed)
    y = y + 0.3 * torch.tanh(2 * x[:, :1])  # not Gaussian: curved dependence
    # raw values (not clipped at 0: in 31 dimensions the Euclidean estimate is near 0) on the
    # points the public function prepares, then the public function itself
    xs, ys = prepare(x, y, reduction="joint", max_samples=None, seed=seed)
    ref = ksg_points_ref(xs, ys, k, metric=metric)
    assert ksg_points_cpu(xs, ys, k, metric=metric) == pytest.approx(ref, abs=MI_TOL), f"seed={seed}"
    nat = mutual_information(x, y, estimator="ksg", reduction="joint", k=k, seed=seed, metric=metric,
                             backend="native")
    assert nat == pytest.approx(max(0.0, ref), abs=MI_TOL), f"seed={seed}"


@requires_native
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("dx", "dy"), [(2, 2), (1, 4), (3, 1), (26, 2), (129, 1)])
@pytest.mark.parametrize("k", [1, 3])
def test_joint_search_with_ties_equals_brute_force(dx, dy, k, metric):
    """Raw points on a coarse grid (no jitter): distances tie, duplicates give eps = 0."""
    from miprun.mi.cpu import ksg_points_cpu
    seed = 100 * dx + dy + k
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal((600, dx)), 1)
    y = np.round(0.5 * x[:, :1] + rng.standard_normal((600, dy)), 1)
    x[:40] = x[40:80]  # exact duplicate points in x (and, on the grid, often in both)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ref = ksg_points_ref(xt, yt, k, metric=metric)
    nat = ksg_points_cpu(xt, yt, k, metric=metric)
    if math.isinf(ref):  # tied duplicates beyond k give eps = 0 and psi(0): both must say so
        assert nat == ref, f"seed={seed}"
    else:
        assert nat == pytest.approx(ref, abs=MI_TOL), f"seed={seed}"


@requires_native
def test_joint_ksg_takes_float32_and_numpy():
    seed = 7
    x, y, _ = spread_gaussian(800, 3, 2, 1.0, seed)
    ref = mutual_information(x, y, estimator="ksg", reduction="joint", backend="reference", seed=seed)
    for a, b in ((x.float(), y.float()), (x.numpy(), y.numpy())):
        got = mutual_information(a, b, estimator="ksg", reduction="joint", seed=seed)
        # float32 rounds the input (a few 1e-8 relative) before standardising: a few neighbours move
        assert got == pytest.approx(ref, abs=0.01 if a.dtype == torch.float32 else MI_TOL), f"seed={seed}"


# ----------------------------------------------------------------------------- closed form
# measured over 12 seeds (native), Euclidean / max-norm: (1, 3) k=3 mean -0.001 / +0.001 sd
# 0.023 / 0.021; (2, 3) k=5 mean -0.018 / -0.020 sd 0.021 / 0.019; (3, 2) k=5 mean -0.016 /
# -0.016 sd 0.015 / 0.018. Keeping only y's first column is off by 0.24-0.47.
# the float64 reference is O(n^2): it runs one seed, the native core two
BACKEND_SEEDS = [("reference", 3), pytest.param("native", 3, marks=requires_native),
                 pytest.param("native", 17, marks=requires_native)]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("backend", "seed"), BACKEND_SEEDS)
@pytest.mark.parametrize(("n", "dx", "dy", "snr", "k", "tol"), [(2000, 1, 3, 1.5, 3, 0.09), (3000, 2, 3, 1.0, 5, 0.1),
                                                                (3000, 3, 2, 1.0, 5, 0.09)])
def test_joint_ksg_closed_form(backend, seed, n, dx, dy, snr, k, tol, metric):
    x, y, true = spread_gaussian(n, dx, dy, snr, seed)
    est = mutual_information(x, y, estimator="ksg", reduction="joint", k=k, seed=seed, metric=metric,
                             backend=backend)
    assert est == pytest.approx(true, abs=tol), f"seed={seed} true={true:.4f} est={est:.4f}"


@pytest.mark.parametrize(("dx", "dy", "snr"), [(1, 1, 2.0), (2, 5, 1.0), (6, 4, 0.5), (30, 30, 0.1)])
@pytest.mark.parametrize("seed", [5, 23])
def test_joint_gaussian_closed_form(dx, dy, snr, seed):
    # sd of the estimate at n = 20000 is <= 0.008 here (0.02 at 30 x 30, bias +d^2/(2n) ~ 0.02)
    x, y, true = spread_gaussian(20_000, dx, dy, snr, seed)
    est = mutual_information(x, y, estimator="gaussian", reduction="joint")
    tol = 0.06 if dx > 10 else 0.03
    assert est == pytest.approx(true, abs=tol), f"seed={seed} true={true:.4f} est={est:.4f}"


@pytest.mark.parametrize("seed", [2, 9])
def test_joint_gaussian_is_invariant_to_invertible_maps_of_each_side(seed):
    """MI is unchanged by an invertible linear map of x and another of y; the estimate too, to rounding."""
    x, y, _ = spread_gaussian(5000, 3, 4, 1.0, seed)
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(4, 4, generator=g, dtype=torch.float64) + 3 * torch.eye(4, dtype=torch.float64)
    base = mutual_information(x, y, estimator="gaussian", reduction="joint")
    assert base > 0.5, f"seed={seed}"
    mapped = mutual_information(x @ a + 5.0, y @ b - 2.0, estimator="gaussian", reduction="joint")
    assert mapped == pytest.approx(base, abs=1e-9), f"seed={seed}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_joint_hist_on_a_bivariate_normal_pair_of_pairs(backend):
    """Two independent correlated pairs (rho 0.8 and 0.6): I = 0.511 + 0.223 nats."""
    seed = 31
    g = torch.Generator().manual_seed(seed)
    rho = torch.tensor([0.8, 0.6], dtype=torch.float64)
    x = torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    y = rho * x + torch.sqrt(1 - rho ** 2) * torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    true = float(-0.5 * torch.log(1 - rho ** 2).sum())
    # 12 quantile bins a column lose ~0.06 nats to discretisation (0.04 of it on the rho=0.8
    # pair); the plug-in bias of 20736 cells filled by 2e5 samples, ~+0.04, is what
    # Miller-Madow removes (0.725 without it, 0.686 with it on this seed)
    est = mutual_information(x, y, estimator="hist", reduction="joint", bins=12, bias_correction="miller_madow",
                             backend=backend)
    assert est == pytest.approx(true - 0.06, abs=0.03), f"seed={seed} true={true:.4f} est={est:.4f}"
    # each pair alone, the joint estimate of one pair, is below the joint estimate of both
    single = mutual_information(x[:, :1], y[:, :1], estimator="hist", reduction="joint", bins=12, backend=backend)
    assert single < est - 0.1, f"seed={seed}"


# ----------------------------------------------------------------------------- one column each
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_column_each_is_the_scalar_estimate(backend):
    """With dx = dy = 1 the joint MI is the MI of a scalar pair: the same points, the same value."""
    seed = 12
    x, y, _ = spread_gaussian(1500, 1, 1, 1.0, seed)
    for est, other in (("ksg", "per_dim"), ("gaussian", "pooled"), ("hist", "pooled")):
        joint = mutual_information(x, y, estimator=est, reduction="joint", seed=seed, backend=backend)
        scalar = mutual_information(x, y, estimator=est, reduction=other, seed=seed, backend=backend)
        assert joint > 0.2 and joint == pytest.approx(scalar, abs=1e-12), (est, seed)


# ----------------------------------------------------------------------------- joint histogram parts
def test_mi_from_cells_equals_the_dense_table():
    seed = 4
    g = torch.Generator().manual_seed(seed)
    cx = torch.randint(0, 9, (3000,), generator=g)
    cy = (cx * 7 + torch.randint(0, 5, (3000,), generator=g)) % 13  # dependent, some cells empty
    joint = torch.zeros(9, 13, dtype=torch.int64)
    joint.index_put_((cx, cy), torch.ones(3000, dtype=torch.int64), accumulate=True)
    for mm in (False, True):
        dense = mi_from_joint_counts_ref(joint, mm)
        # cell labels need not be small or contiguous
        assert mi_from_cells(cx * 1000 + 5, cy - 50, miller_madow=mm) == pytest.approx(dense, abs=1e-12)
        assert dense > 0.5


def test_joint_bins_rule_keeps_the_cells_of_a_scalar_pair():
    assert joint_bins("auto", 5000, 2) == 18  # ceil(5000^(1/3)), as for a scalar pair
    assert joint_bins("auto", 5000, 3) == 7  # ceil(18^(2/3)): 343 cells, about 18^2
    assert joint_bins("auto", 5000, 4) == 5  # ceil(18^(1/2))
    assert joint_bins(9, 5000, 4) == 9  # an int is taken as it is
    with pytest.raises(ValueError, match="bins must be between 2 and 256"):
        joint_bins(1, 5000, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_joint_hist_refuses_many_columns_and_says_why(backend):
    x, y, _ = spread_gaussian(500, 3, JOINT_HIST_MAX_DIMS - 2, 1.0, 1)
    with pytest.raises(ValueError, match=r"dx \+ dy <= 4 columns, got 3 \+ 2.*b\^5 cells.*sample size.*'ksg' or "
                                         r"'gaussian'"):
        mutual_information(x, y, estimator="hist", reduction="joint", backend=backend)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ["ksg", "gaussian", "hist"])
def test_joint_bad_input_is_a_value_error_naming_it(backend, estimator):
    x, y, _ = spread_gaussian(60, 2, 1, 1.0, 0)
    with pytest.raises(ValueError, match="x has 60 samples, y has 59"):
        mutual_information(x, y[:59], estimator=estimator, reduction="joint", backend=backend)
    bad = y.clone()
    bad[5, 0] = math.nan
    with pytest.raises(ValueError, match="y contains 1 NaN or infinite values"):
        mutual_information(x, bad, estimator=estimator, reduction="joint", backend=backend)
    bad = x.clone()
    bad[0, 1] = math.inf
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite values"):
        mutual_information(bad, y, estimator=estimator, reduction="joint", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_joint_ksg_too_few_rows_for_k(backend):
    x, y, _ = spread_gaussian(5, 2, 3, 1.0, 0)
    with pytest.raises(ValueError, match="KSG with k=5 needs at least 6 samples, got 5"):
        mutual_information(x, y, estimator="ksg", reduction="joint", k=5, backend=backend)
    x, y, _ = spread_gaussian(100, 2, 3, 1.0, 0)  # enough rows, too few kept by max_samples
    with pytest.raises(ValueError, match="KSG with k=5 needs at least 6 samples, got 4"):
        mutual_information(x, y, estimator="ksg", reduction="joint", k=5, max_samples=4, backend=backend)


def test_joint_gaussian_singular_covariances_are_named():
    x, y, _ = spread_gaussian(400, 3, 2, 1.0, 8)
    const = x.clone()
    const[:, 2] = 4.0
    with pytest.raises(ValueError, match="column 2 of x is constant"):
        mutual_information(const, y, estimator="gaussian", reduction="joint")
    collinear = y.clone()
    collinear[:, 1] = 2 * collinear[:, 0] - 1
    with pytest.raises(ValueError, match="covariance of y is singular.*linear combination"):
        mutual_information(x, collinear, estimator="gaussian", reduction="joint")
    with pytest.raises(ValueError, match=r"covariance of \(x, y\) together is singular.*MI is infinite"):
        mutual_information(x, x[:, :2] @ torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64),
                           estimator="gaussian", reduction="joint")
    with pytest.raises(ValueError, match="more samples than dimensions: n=5 samples, dx \\+ dy = 5"):
        mutual_information(x[:5], y[:5], estimator="gaussian", reduction="joint")


def test_joint_is_refused_by_estimators_without_it():
    x, y, _ = spread_gaussian(100, 2, 2, 1.0, 0)
    with pytest.raises(ValueError, match="estimator 'ksg' supports reduction .*got 'jiont'"):
        mutual_information(x, y, estimator="ksg", reduction="jiont")
