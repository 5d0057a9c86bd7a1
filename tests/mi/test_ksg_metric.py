"""KSG's ``metric``: the Euclidean or the max-norm within x and within y.

The native core is held to the float64 reference on fresh random inputs (a new seed every
run, printed in each failure message): the same keys and counts, so the same value to the
float64 summation order. The Triton kernels are held to it in tests/kernels/test_knn_kernel.py.
"""

from __future__ import annotations

import re
import secrets

import numpy as np
import pytest
import torch

from miprun import mutual_information
from miprun.mi.ksg import DEFAULT_METRICS, METRICS, keys_ref, ksg_points_ref, ksg_ref, prepare
from support import requires_native, spread_gaussian

BACKENDS = ["reference", pytest.param("native", marks=requires_native)]
MI_TOL = 1e-9  # native against reference: the same keys and counts, summed in another order


# ----------------------------------------------------------------------------- native = reference
# dx != dy, one column on either side (the sorted marginal counts, squared), wide spaces (the
# k-d tree: the Euclidean norm always uses it), k from 1 to 8
@requires_native
@pytest.mark.parametrize(("m", "dx", "dy", "k"), [(500, 2, 1, 1), (800, 1, 4, 3), (900, 3, 5, 5), (1300, 5, 5, 3),
                                                  (600, 12, 7, 4), (400, 1, 40, 2), (350, 70, 65, 8)])
def test_euclidean_native_equals_reference_on_fresh_inputs(m, dx, dy, k):
    from miprun.mi.cpu import ksg_points_cpu
    seed = secrets.randbelow(2**31)
    g = torch.Generator().manual_seed(seed)
    snr = float(torch.empty(()).uniform_(0.2, 3.0, generator=g))
    x, y, _ = spread_gaussian(m, dx, dy, snr, seed)
    y = y + 0.5 * torch.sin(3 * x[:, -1:])  # not Gaussian: curved dependence
    xs, ys = prepare(x, y, reduction="joint", max_samples=None, seed=seed)
    ref = ksg_points_ref(xs, ys, k, metric="euclidean")
    nat = ksg_points_cpu(xs, ys, k, metric="euclidean")
    assert nat == pytest.approx(ref, abs=MI_TOL), f"seed={seed} snr={snr}"
    assert ref != ksg_points_ref(xs, ys, k, metric="chebyshev"), f"seed={seed}"  # the metric was applied


@requires_native
@pytest.mark.parametrize(("dx", "dy"), [(2, 3), (1, 2), (4, 1)])
def test_euclidean_ties_and_duplicates_on_fresh_grids(dx, dy):
    """Points on a grid of 0.5 (no jitter): many equal sums of squares, duplicates give eps = 0."""
    from miprun.mi.cpu import ksg_points_cpu
    seed = secrets.randbelow(2**31)
    rng = np.random.default_rng(seed)
    x = np.round(2 * rng.standard_normal((500, dx))) / 2
    y = np.round(2 * (0.6 * x[:, :1] + rng.standard_normal((500, dy)))) / 2
    x[:30] = x[30:60]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for k in (1, 4):
        ref = ksg_points_ref(xt, yt, k, metric="euclidean")
        nat = ksg_points_cpu(xt, yt, k, metric="euclidean")
        if np.isinf(ref):  # tied duplicates beyond k: eps = 0 and psi(0), in both
            assert nat == ref, f"seed={seed} k={k}"
        else:
            assert nat == pytest.approx(ref, abs=MI_TOL), f"seed={seed} k={k}"


def test_euclidean_keys_are_squares_added_in_column_order():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(7, 5, generator=g, dtype=torch.float64)
    b = torch.randn(11, 5, generator=g, dtype=torch.float64)
    keys = keys_ref(a, b, "euclidean")
    for i in range(7):
        for j in range(11):
            s = 0.0
            for t in range(5):  # Python floats: one rounding per operation, in order
                d = float(a[i, t]) - float(b[j, t])
                s = s + d * d
            assert float(keys[i, j]) == s
    assert torch.equal(keys_ref(a, b, "chebyshev"), (a[:, None] - b[None]).abs().amax(-1))


# ----------------------------------------------------------------------------- closed form
# 6 + 6 columns, every column of y tied to every column of x, true MI 3 log 2 = 2.079 nats.
# KSG is biased low in 12 dimensions, less so with Euclidean norms: measured over 12 seeds,
# Euclidean minus max-norm on the same sample +0.109 nats (sd 0.011, least +0.090); error of
# the Euclidean estimate -0.622 (sd 0.027). A max-norm in disguise, or a Euclidean norm over
# all 12 columns together, would fail the first check.
@requires_native
@pytest.mark.parametrize("seed", [41, 58])
def test_euclidean_is_closer_to_the_truth_in_many_dimensions(seed):
    x, y, true = spread_gaussian(3000, 6, 6, 1.0, seed)
    kw = dict(estimator="ksg", reduction="joint", k=5, seed=seed)
    euclid = mutual_information(x, y, metric="euclidean", **kw)
    cheb = mutual_information(x, y, metric="chebyshev", **kw)
    assert 0.06 < euclid - cheb < 0.16, f"seed={seed} euclid={euclid:.4f} cheb={cheb:.4f}"
    assert euclid - true == pytest.approx(-0.622, abs=0.11), f"seed={seed} true={true:.4f} est={euclid:.4f}"


# ----------------------------------------------------------------------------- scalar pairs, defaults
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_column_each_is_the_same_in_both_norms(backend):
    seed = 19
    x, y, _ = spread_gaussian(1500, 1, 1, 1.0, seed)
    for reduction in ("joint", "per_dim", "pooled"):
        values = {metric: mutual_information(x, y, estimator="ksg", reduction=reduction, metric=metric, seed=seed,
                                             backend=backend) for metric in METRICS}
        assert values["euclidean"] == values["chebyshev"] > 0.2, (reduction, values)


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_metric_by_reduction(backend):
    seed = 8
    x, y, _ = spread_gaussian(800, 3, 3, 1.0, seed)
    for reduction in ("joint", "projection"):
        kw = dict(estimator="ksg", reduction=reduction, seed=seed, backend=backend)
        default = mutual_information(x, y, **kw)
        assert default == mutual_information(x, y, metric=DEFAULT_METRICS[reduction], **kw), reduction
        other = "chebyshev" if DEFAULT_METRICS[reduction] == "euclidean" else "euclidean"
        assert default != mutual_information(x, y, metric=other, **kw), reduction
    assert DEFAULT_METRICS["joint"] == "euclidean" and DEFAULT_METRICS["projection"] == "chebyshev"
    assert ksg_ref(x, y, reduction="joint", seed=seed) == mutual_information(x, y, estimator="ksg", reduction="joint",
                                                                             seed=seed, backend="reference")


# ----------------------------------------------------------------------------- bad values
CHOICES = r"metric must be one of \('chebyshev', 'euclidean'\), got "


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ["ksg", "gaussian", "hist"])
@pytest.mark.parametrize("bad", ["l2", "Euclidean", "", 2])
def test_bad_metric_is_a_value_error_naming_the_choices(backend, estimator, bad):
    x, y, _ = spread_gaussian(100, 2, 1, 1.0, 0)
    with pytest.raises(ValueError, match=CHOICES + re.escape(repr(bad))):
        mutual_information(x, y, estimator=estimator, reduction="joint", metric=bad, backend=backend)


def test_bad_metric_in_the_lower_layers():
    x, y, _ = spread_gaussian(50, 1, 1, 1.0, 0)  # one column each: refused all the same
    with pytest.raises(ValueError, match=CHOICES + "'manhattan'"):
        ksg_points_ref(x, y, 3, metric="manhattan")
    with pytest.raises(ValueError, match=CHOICES + "'manhattan'"):
        ksg_ref(x, y, reduction="joint", metric="manhattan")


@requires_native
def test_bad_metric_in_the_native_core():
    from miprun._native import core
    from miprun.mi.cpu import ksg_points_cpu
    x, y, _ = spread_gaussian(50, 2, 2, 1.0, 0)
    with pytest.raises(ValueError, match="metric must be 'chebyshev' or 'euclidean', got 'cosine'"):
        core().ksg_points(x.numpy(), y.numpy(), 3, metric="cosine")
    with pytest.raises(ValueError, match="metric must be 'chebyshev' or 'euclidean', got 'l1'"):
        ksg_points_cpu(x, y, 3, metric="l1")
