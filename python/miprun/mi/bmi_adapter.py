"""miprun's estimators behind the estimator interface of BMI, the benchmark of MI estimators.

BMI ("Beyond Normal", Czyz et al., NeurIPS 2023; the package ``benchmark-mi``) runs any
object with its ``IMutualInformationPointEstimator`` methods: ``estimate(x, y) -> float``,
``estimate_with_info(x, y)`` and ``parameters()``. :class:`MiprunEstimator` has them, so
BMI's own runner (``bmi.benchmark.run_estimator``) and task list (``bmi.BENCHMARK_TASKS``)
run miprun's estimators beside BMI's::

    import bmi
    from miprun.mi.bmi_adapter import MiprunEstimator

    task = bmi.BENCHMARK_TASKS["multinormal-dense-5-5-0.5"]
    x, y = task.sample(5000, seed=0)
    MiprunEstimator("ksg", k=5).estimate(x, y)        # joint KSG, in nats (Euclidean within x and y, as BMI's)

BMI is optional (``pip install 'miprun[bmi]'``; it pins old JAX versions, so it usually
lives in an environment of its own: see the README). It is imported only by the two
methods that return BMI's types, ``estimate_with_info`` and ``parameters``; ``estimate``
and everything else work without it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from miprun._native import package_version
from miprun.mi import ESTIMATORS, REDUCTIONS, mutual_information
from miprun.mi.backend import BACKENDS
from miprun.mi.ksg import DEFAULT_PROJECTION_DIM, check_metric, resolve_metric

__all__ = ["MiprunEstimator", "as_sample", "standard_estimators"]


def as_sample(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """BMI's sample arrays (numpy, JAX or nested lists; shape ``(n,)`` or ``(n, d)``) as float64 ``(n, dx)``, ``(n, dy)``."""
    out = []
    for name, a in (("x", x), ("y", y)):
        arr = np.asarray(a)  # a JAX array converts through __array__, on the host
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"{name} must have shape (n,) or (n, d), got {arr.shape}")
        out.append(arr)
    return out[0], out[1]


class MiprunEstimator:
    """One of :func:`miprun.mutual_information`'s estimators as a BMI point estimator.

    Parameters
    ----------
    estimator : {"ksg", "gaussian", "hist"}
    reduction : str
        ``joint`` (default): the MI of x and y as random vectors, what BMI's tasks ask for.
    k, bins, binning, bias_correction, max_samples, projection_dim, backend
        As :func:`miprun.mutual_information` (``k`` defaults to 5 here, BMI's KSG
        neighbourhood).
    metric : {None, "euclidean", "chebyshev"}
        KSG's norm within x and within y, as :func:`miprun.mutual_information`; None: the
        reduction's default, Euclidean for ``joint`` (BMI's KSG default, ``metric_x``
        ``"euclidean"``); ``"chebyshev"`` is BMI's KSG with ``metric_x="chebyshev"``.
        :meth:`options` and :meth:`parameters` name the norm KSG uses.
    seed : int
        Seeds KSG's tie-breaking jitter (and subsamples, projections): the same seed and
        sample give the same estimate.
    """

    def __init__(self, estimator: str = "ksg", *, reduction: str = "joint", k: int = 5, metric: str | None = None,
                 bins: int | str = "auto", binning: str = "quantile", bias_correction: str | None = None,
                 max_samples: int | None = None, seed: int = 0, projection_dim: int = DEFAULT_PROJECTION_DIM,
                 backend: str = "auto") -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if reduction not in REDUCTIONS[estimator]:
            raise ValueError(f"estimator {estimator!r} supports reduction {REDUCTIONS[estimator]}, got {reduction!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if metric is not None:
            check_metric(metric)
        if estimator == "ksg":  # named, so that a run's parameters say which norm KSG used
            metric = resolve_metric(metric, reduction)
        self._options: dict[str, Any] = dict(estimator=estimator, reduction=reduction, k=k, metric=metric, bins=bins,
                                             binning=binning, bias_correction=bias_correction,
                                             max_samples=max_samples, seed=seed, projection_dim=projection_dim,
                                             backend=backend)

    def options(self) -> dict[str, Any]:
        """The options passed to :func:`miprun.mutual_information` (a copy)."""
        return dict(self._options)

    def estimate(self, x: Any, y: Any) -> float:
        """MI in nats between the paired samples ``x: (n, dx)`` and ``y: (n, dy)``."""
        xs, ys = as_sample(x, y)
        return float(mutual_information(xs, ys, **self._options))

    def estimate_with_info(self, x: Any, y: Any) -> Any:
        """The estimate as BMI's ``EstimateResult``, with its wall time and the sample's shape."""
        from bmi.interface import EstimateResult  # BMI is optional: imported where its types are needed

        start = time.perf_counter()  # conversion included, as BMI times its own estimators
        xs, ys = as_sample(x, y)
        value = float(mutual_information(xs, ys, **self._options))
        seconds = time.perf_counter() - start
        info = {"n": xs.shape[0], "dim_x": xs.shape[1], "dim_y": ys.shape[1], "miprun": package_version()}
        return EstimateResult(mi_estimate=value, time_in_seconds=seconds, additional_information=info)

    def parameters(self) -> Any:
        """The options as a BMI parameters model (a pydantic model, as BMI's estimators return)."""
        from bmi.interface import BaseModel  # BMI is optional: imported where its types are needed

        class MiprunParameters(BaseModel):
            estimator: str
            reduction: str
            k: int
            metric: Any
            bins: Any
            binning: str
            bias_correction: Any
            max_samples: Any
            seed: int
            projection_dim: int
            backend: str

        return MiprunParameters(**self._options)

    def __repr__(self) -> str:
        return f"MiprunEstimator({', '.join(f'{k}={v!r}' for k, v in self._options.items())})"


def standard_estimators(*, k: int = 5, seed: int = 0) -> dict[str, MiprunEstimator]:
    """miprun's joint estimators under the ids a BMI run reports them by: KSG (``k``), Gaussian, histogram."""
    return {f"miprun-ksg-{k}": MiprunEstimator("ksg", k=k, seed=seed),
            "miprun-gaussian": MiprunEstimator("gaussian"),
            "miprun-hist": MiprunEstimator("hist")}
