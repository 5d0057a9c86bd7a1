"""Bad input raises ValueError naming the problem; degenerate input gives a finite answer.

Checked on the public function for both backends, and on the native core directly (it is
called by the score window without the public validation in front of it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from miprun import mutual_information
from support import requires_native

BACKENDS = ["reference", pytest.param("native", marks=requires_native)]
ESTIMATORS = ["hist", "ksg", "gaussian"]


def pair(n=50, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, x + torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_mismatched_samples(backend, estimator):
    x, y = pair()
    with pytest.raises(ValueError, match="x has 50 samples, y has 49"):
        mutual_information(x, y[:49], estimator=estimator, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_mismatched_columns(backend, estimator):
    x, y = pair()
    with pytest.raises(ValueError, match="same number of columns; got 3 and 2"):
        mutual_information(x, y[:, :2], estimator=estimator, reduction="per_dim", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_too_few_samples_for_k(backend, k):
    x, y = pair(n=k)
    with pytest.raises(ValueError, match=f"at least {k + 1} samples, got {k}"):
        mutual_information(x, y, estimator="ksg", k=k, backend=backend)
    # after subsampling too
    x, y = pair(n=100)
    with pytest.raises(ValueError, match=f"at least {k + 1} samples"):
        mutual_information(x, y, estimator="ksg", k=k, max_samples=k, reduction="per_dim", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite(backend, estimator, bad):
    x, y = pair()
    y[7, 1] = bad
    with pytest.raises(ValueError, match="y contains 1 NaN or infinite values"):
        mutual_information(x, y, estimator=estimator, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("shape", [(0, 3), (5, 0), (0,)])
def test_empty(backend, estimator, shape):
    x = torch.empty(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match="empty input|at least"):
        mutual_information(x, x.clone(), estimator=estimator, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["pooled", "per_dim"])
@pytest.mark.parametrize("bias_correction", [None, "miller_madow"])
@pytest.mark.parametrize("binning", ["quantile", "uniform"])
def test_constant_columns_hist_and_gaussian_are_exactly_zero(backend, reduction, bias_correction, binning):
    x, y = pair(n=400, d=4)
    const = torch.full_like(x, 2.5)
    for a, b in ((const, y), (x, const), (const, const.clone())):
        assert mutual_information(a, b, estimator="hist", reduction=reduction, binning=binning,
                                  bias_correction=bias_correction, bins=8, backend=backend) == 0.0
        assert mutual_information(a, b, estimator="gaussian", reduction=reduction, backend=backend) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["pooled", "per_dim", "projection"])
def test_constant_columns_ksg_is_finite_and_near_zero(backend, reduction):
    x, y = pair(n=400, d=4)
    const = torch.full_like(x, -7.0)
    for a, b in ((const, y), (const, const.clone())):
        v = mutual_information(a, b, estimator="ksg", reduction=reduction, backend=backend)
        # only the 1e-10 tie-breaking jitter is left: independent noise, so MI ~ 0 (clipped at 0)
        assert math.isfinite(v) and 0.0 <= v < 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_options(backend):
    x, y = pair()
    with pytest.raises(ValueError, match="binning must be 'quantile' or 'uniform'"):
        mutual_information(x, y, estimator="hist", binning="equal", bins=4, backend=backend)
    with pytest.raises(ValueError, match="bins must be between 2 and 256, got 300"):
        mutual_information(x, y, estimator="hist", bins=300, backend=backend)
    with pytest.raises(ValueError, match="k must be a positive int"):
        mutual_information(x, y, estimator="ksg", k=0, backend=backend)


@requires_native
def test_core_rejects_bad_arrays_directly():
    from miprun import _core
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 2))
    with pytest.raises(ValueError, match="pair up element for element"):
        _core.hist_mi(x, x[:29], bins=4)
    with pytest.raises(ValueError, match="column for column"):
        _core.gaussian_mi(x, x[:, :1].repeat(2, 0)[:30], reduction="per_dim")
    with pytest.raises(ValueError, match="reduction must be 'pooled' or 'per_dim', got 'mean'"):
        _core.hist_mi(x, x, bins=4, reduction="mean")
    with pytest.raises(ValueError, match="bins must be between 2 and 256"):
        _core.compute_edges(x, 1, "quantile", False)
    with pytest.raises(ValueError, match="x is empty"):
        _core.compute_edges(np.empty((0, 2)), 4, "quantile", False)
    bad = x.copy()
    bad[3, 1] = np.nan
    for call in (lambda: _core.compute_edges(bad, 4, "quantile", False), lambda: _core.hist_mi(bad, x, bins=4),
                 lambda: _core.codes_from_edges(bad, np.array([0.0])), lambda: _core.ksg_points(bad, x, 3),
                 lambda: _core.gaussian_mi(x, bad)):
        with pytest.raises(ValueError, match="contains 1 NaN or infinite values"):
            call()
    with pytest.raises(ValueError, match="must be sorted"):
        _core.codes_from_edges(x, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="edges must have shape"):
        _core.codes_from_edges(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="real numeric array"):
        _core.hist_mi(x.astype(np.complex128), x, bins=4)
    codes = np.full((10, 2), 5, np.uint8)
    with pytest.raises(ValueError, match="codes must be below bins=4, got a code 5"):
        _core.joint_counts(codes, codes, 4, False)
    with pytest.raises(ValueError, match="codes must be uint8"):
        _core.joint_counts(codes.astype(np.int64), codes, 8, False)
    with pytest.raises(ValueError, match="KSG with k=3 needs at least 4 samples, got 3"):
        _core.ksg_points(x[:3], x[:3], 3)
    with pytest.raises(ValueError, match="k must be a positive int"):
        _core.ksg_per_dim(x, x, 0)
    with pytest.raises(ValueError, match="empty joint histogram"):
        _core.mi_from_counts(np.zeros((3, 3), np.int64), False)


@requires_native
def test_cpu_glue_rejects_wrong_code_dtype():
    from miprun.mi.cpu import joint_counts_cpu
    c = torch.zeros(5, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="cx must hold uint8 bin codes, got torch.int64"):
        joint_counts_cpu(c, c, bins=4, per_dim=False)
