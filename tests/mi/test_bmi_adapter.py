"""The BMI adapter: array conversion, seeds and estimates without BMI; BMI's own runner with it.

The tests at the end need BMI (``benchmark-mi``) and skip, saying so, where it is not
installed: it pins old JAX versions, so it lives in an environment of its own (README,
"Benchmarking against BMI").
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from miprun import mutual_information
from miprun.mi.bmi_adapter import MiprunEstimator, as_sample, standard_estimators


def _sample(n=1200, dx=3, dy=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx))
    y = 0.6 * x[:, :1] - 0.4 * x[:, 1:2] + rng.standard_normal((n, dy))
    return x, y


class ArrayLike:
    """An array from another library (as a JAX array is): numpy reads it through __array__."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


def test_as_sample_converts_to_float64_columns():
    x, y = _sample()
    xs, ys = as_sample(ArrayLike(x.astype(np.float32)), y[:, 0].tolist())
    assert xs.dtype == np.float64 and xs.shape == (1200, 3) and xs.flags.c_contiguous
    assert ys.shape == (1200, 1) and np.array_equal(ys[:, 0], y[:, 0])
    assert np.array_equal(xs, x.astype(np.float32).astype(np.float64))
    xs, _ = as_sample(x[:, ::2], y)  # a strided view becomes contiguous, same values
    assert np.array_equal(xs, x[:, ::2]) and xs.flags.c_contiguous
    with pytest.raises(ValueError, match="x must have shape"):
        as_sample(np.zeros((4, 2, 2)), y[:4])
    with pytest.raises(ValueError, match="y must be a numeric array"):
        as_sample(x, np.array(["a"] * 1200))


@pytest.mark.parametrize("estimator", ["ksg", "gaussian"])
def test_estimate_is_mutual_information_with_the_options(estimator):
    x, y = _sample(seed=3)
    est = MiprunEstimator(estimator, k=4, seed=11)
    got = est.estimate(ArrayLike(x), y)
    want = mutual_information(x, y, estimator=estimator, reduction="joint", k=4, seed=11)
    assert got == want and got > 0.2
    assert isinstance(got, float)


def test_seed_sets_the_jitter():
    # a tie-heavy sample: the seeded jitter decides ties, so the seed matters and is reproduced
    rng = np.random.default_rng(5)
    x = np.round(rng.standard_normal((800, 2)), 1)
    y = np.round(x[:, :1] + rng.standard_normal((800, 1)), 1)
    a, b = MiprunEstimator("ksg", seed=1), MiprunEstimator("ksg", seed=2)
    assert a.estimate(x, y) == MiprunEstimator("ksg", seed=1).estimate(x, y)
    assert a.estimate(x, y) != b.estimate(x, y)
    assert abs(a.estimate(x, y) - b.estimate(x, y)) < 0.05  # only the order of tied points changes


def test_defaults_are_joint_with_bmi_neighbourhood():
    est = MiprunEstimator()
    assert est.options()["estimator"] == "ksg" and est.options()["reduction"] == "joint"
    assert est.options()["k"] == 5  # BMI's KSG neighbourhood
    assert est.options()["metric"] == "euclidean"  # BMI's KSG default norm, named in the options
    est.options()["k"] = 9  # a copy: the estimator keeps its own
    assert est.options()["k"] == 5
    assert set(standard_estimators()) == {"miprun-ksg-5", "miprun-gaussian", "miprun-hist"}
    assert "estimator='ksg'" in repr(est)


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
def test_metric_is_passed_on(metric):
    x, y = _sample(seed=6)
    est = MiprunEstimator("ksg", k=4, metric=metric)
    assert est.options()["metric"] == metric
    got = est.estimate(x, y)
    assert got == mutual_information(x, y, estimator="ksg", reduction="joint", k=4, metric=metric)
    # the two norms give different estimates on these 3 + 2 columns: the option is not dropped on the way
    other = {"euclidean": "chebyshev", "chebyshev": "euclidean"}[metric]
    assert abs(got - mutual_information(x, y, estimator="ksg", reduction="joint", k=4, metric=other)) > 1e-4
    if metric == "euclidean":  # the default
        assert MiprunEstimator("ksg", k=4).estimate(x, y) == got


def test_bad_options_are_refused_when_built():
    with pytest.raises(ValueError, match="estimator must be one of"):
        MiprunEstimator("mine")
    with pytest.raises(ValueError, match="estimator 'gaussian' supports reduction .*got 'projection'"):
        MiprunEstimator("gaussian", reduction="projection")
    with pytest.raises(ValueError, match="backend must be one of"):
        MiprunEstimator(backend="gpu")
    with pytest.raises(ValueError, match=r"metric must be one of \('chebyshev', 'euclidean'\), got 'minkowski'"):
        MiprunEstimator("ksg", metric="minkowski")


def test_bad_samples_are_value_errors_naming_them():
    x, y = _sample(n=50)
    with pytest.raises(ValueError, match="x has 50 samples, y has 49"):
        MiprunEstimator().estimate(x, y[:49])
    with pytest.raises(ValueError, match="KSG with k=5 needs at least 6 samples, got 5"):
        MiprunEstimator().estimate(x[:5], y[:5])
    y = y.copy()
    y[3, 0] = math.nan
    with pytest.raises(ValueError, match="y contains 1 NaN"):
        MiprunEstimator("gaussian").estimate(x, y)


# ----------------------------------------------------------------------------- with BMI installed
def _bmi():
    return pytest.importorskip("bmi", reason="benchmark-mi (BMI) is not installed here; it pins old JAX versions, so "
                                             "it is tested in an environment of its own (README, 'Benchmarking "
                                             "against BMI')")


def test_bmi_runner_runs_the_adapter_on_a_benchmark_task(tmp_path):
    bmi = _bmi()
    task = bmi.BENCHMARK_TASKS["multinormal-sparse-3-3-2-2.0"]
    path = tmp_path / "sample.csv"
    task.save_sample(path, 3000, 1)
    results = {name: bmi.benchmark.run_estimator(est, name, path, task.id, seed=1)
               for name, est in standard_estimators().items() if name != "miprun-hist"}
    for name, result in results.items():
        assert result.success, (name, result.additional_information)
        assert result.time_in_seconds > 0 and result.n_samples == 3000
        assert result.additional_information["dim_x"] == 3
    truth = task.mutual_information  # 1.02 nats
    assert abs(results["miprun-gaussian"].mi_estimate - truth) < 0.05
    # BMI's own KSG (its default: Euclidean within x and within y) is the same estimator: the
    # same value up to the tie-breaking jitter (it has none) and the rounding of distances
    x, y = bmi.utils.read_sample(path)
    theirs = bmi.estimators.KSGEnsembleFirstEstimator(neighborhoods=(5,)).estimate(x, y)
    assert results["miprun-ksg-5"].mi_estimate == pytest.approx(theirs, abs=1e-6)


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
def test_each_metric_is_bmis_ksg_with_that_metric(metric):
    """miprun's joint KSG in either norm equals BMI's KSG with the same norm, and not with the other."""
    bmi = _bmi()
    task = bmi.BENCHMARK_TASKS["multinormal-dense-5-5-0.5"]
    x, y = task.sample(2000, 4)
    ours = MiprunEstimator("ksg", k=5, metric=metric).estimate(x, y)
    same = bmi.estimators.KSGEnsembleFirstEstimator(neighborhoods=(5,), metric_x=metric).estimate(x, y)
    other = bmi.estimators.KSGEnsembleFirstEstimator(
        neighborhoods=(5,), metric_x="chebyshev" if metric == "euclidean" else "euclidean").estimate(x, y)
    assert ours == pytest.approx(same, abs=1e-6)
    assert abs(ours - other) > 0.005


def test_bmi_gaussian_agrees_with_cca():
    bmi = _bmi()
    task = bmi.BENCHMARK_TASKS["multinormal-dense-5-5-0.5"]
    x, y = task.sample(5000, 2)
    ours = MiprunEstimator("gaussian").estimate(x, y)
    theirs = bmi.estimators.CCAMutualInformationEstimator().estimate(x, y)
    assert ours == pytest.approx(theirs, abs=0.01)


def test_parameters_are_a_bmi_model():
    _bmi()
    params = MiprunEstimator("ksg", k=7, seed=3).parameters()
    assert params.k == 7 and params.seed == 3 and params.reduction == "joint" and params.metric == "euclidean"
    assert params.dict()["estimator"] == "ksg"
    assert MiprunEstimator("ksg", metric="chebyshev").parameters().metric == "chebyshev"
