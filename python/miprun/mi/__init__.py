"""Mutual-information estimators and the block-similarity baselines.

One meaning, three implementations: the plain-torch float64 ``*_ref`` functions are the
specification; the C++ core (``miprun._core``) runs CPU data; Triton kernels run CUDA
tensors where they lie, with no copy to the host.
"""

from __future__ import annotations

from miprun.mi import cpu
from miprun.mi.backend import BACKENDS, resolve_backend
from miprun.mi.codes import mi_from_counts
from miprun.mi.scale import DISTANCE_ESTIMATORS, MI_ESTIMATORS, information_coefficient
from miprun.mi._input import check_pair, check_same_columns
from miprun.mi.binning import resolve_bins
from miprun.mi.gaussian import gaussian_joint, gaussian_ref
from miprun.mi.hist import BIAS_CORRECTIONS, hist_ref
from miprun.mi.hist_joint import check_joint_hist, hist_joint, hist_joint_ref, joint_bins
from miprun.mi.ksg import DEFAULT_PROJECTION_DIM, check_metric, ksg_prepared, ksg_ref, prepare, resolve_metric
from miprun.mi.similarity import angular_ref, cosine_ref

ESTIMATORS = MI_ESTIMATORS + DISTANCE_ESTIMATORS
REDUCTIONS = {"hist": ("pooled", "per_dim", "joint"), "ksg": ("pooled", "per_dim", "projection", "joint"),
              "gaussian": ("pooled", "per_dim", "joint"), "cosine": ("pooled",), "angular": ("pooled",)}

__all__ = ["mutual_information", "information_coefficient", "ESTIMATORS", "REDUCTIONS", "BACKENDS",
           "hist_ref", "hist_joint_ref", "ksg_ref", "gaussian_ref", "cosine_ref", "angular_ref"]

def mutual_information(x, y, *, estimator: str = "hist", reduction: str = "pooled", bins: int | str = "auto",
                       binning: str = "quantile", k: int = 3, metric: str | None = None,
                       bias_correction: str | None = None, max_samples: int | None = None, seed: int = 0,
                       projection_dim: int = DEFAULT_PROJECTION_DIM, backend: str = "auto") -> float:
    """Estimate the mutual information between paired samples ``x`` and ``y``, in nats.

    Parameters
    ----------
    x, y : tensor or ndarray, shape (n,) or (n, d)
        Paired samples (rows are samples, e.g. tokens; columns dimensions). Any float
        dtype; torch tensors may live on CPU or CUDA. ``x`` and ``y`` may have different
        widths ``dx``, ``dy`` with ``reduction="joint"``.
    estimator : {"hist", "ksg", "gaussian", "cosine", "angular"}
        ``hist`` plug-in MI of a joint histogram; ``ksg`` Kraskov estimator 1;
        ``gaussian`` ``-1/2 log(1 - rho^2)``. ``cosine`` (ShortGPT Block Influence,
        ``1 - mean cos``) and ``angular`` (``arccos(mean cos) / pi``) are distances, not
        MI, compared row by row; they ignore ``reduction``.
    reduction : {"pooled", "per_dim", "projection", "joint"}
        ``pooled``: all ``n*d`` elements are samples of one scalar pair. ``per_dim``: mean
        over columns ``j`` of MI(x[:, j], y[:, j]). ``projection`` (ksg only): both
        projected by one seeded Gaussian matrix to ``projection_dim`` dimensions,
        multivariate KSG. ``joint``: the MI between ``x: (n, dx)`` and ``y: (n, dy)`` as
        random vectors, any ``dx, dy >= 1``: ``ksg`` with exact neighbours over all
        ``dx + dy`` columns (every row unless ``max_samples``; the norm: ``metric``); ``gaussian``
        ``1/2 (log det Sx + log det Sy - log det S)`` (ValueError when a covariance is
        singular); ``hist`` a joint histogram over all columns, only for ``dx + dy <= 4``.
    bins : int or {"auto", "rice", "sturges", "sqrt"}
        Bins per variable for ``hist`` (2..256); rules use the sample count of one pair.
        With ``reduction="joint"``, bins per column: a rule gives each column
        ``ceil(B^(2 / (dx + dy)))``, with ``B`` the rule's bins for a scalar pair.
    binning : {"quantile", "uniform"}
        ``quantile``: equal-frequency bins (robust to outlier activations);
        ``uniform``: equal-width bins over the data range.
    k : int
        Neighbours for ``ksg``.
    metric : {None, "euclidean", "chebyshev"}
        ``ksg``'s norm within x and within y; the distance in the joint space is the larger
        of the two (Kraskov's estimator 1). ``euclidean``: the Euclidean norm (as BMI's KSG);
        ``chebyshev``: the max-norm. None: ``euclidean`` for ``reduction="joint"`` (closer to
        the truth on BMI's benchmark), ``chebyshev`` for the others (for the scalar pairs of
        ``pooled`` and ``per_dim`` the two give the same distances).
    bias_correction : {None, "miller_madow"}
        For ``hist``.
    max_samples : int, optional
        ``ksg`` subsample size: element pairs for ``pooled`` (default 20000), rows for
        ``per_dim`` and ``joint`` (default all) and ``projection`` (default 4096).
    seed : int
        Seeds the subsample, the projection and the KSG tie-breaking jitter.
    backend : {"auto", "reference", "native", "triton"}
        ``auto``: Triton for CUDA tensors, the C++ core for CPU data (the float64
        reference when the core is not built).

    Returns
    -------
    float
        MI in nats (``hist``, ``ksg``, ``gaussian``), or the distance for ``cosine``/``angular``.

    Raises
    ------
    ValueError
        On mismatched shapes, empty input, NaN/inf, too few samples for ``k``, or an
        unknown option. Constant variables give 0.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if reduction not in REDUCTIONS[estimator] and estimator not in DISTANCE_ESTIMATORS:
        raise ValueError(f"estimator {estimator!r} supports reduction {REDUCTIONS[estimator]}, got {reduction!r}")
    if bias_correction not in BIAS_CORRECTIONS:
        raise ValueError(f"bias_correction must be None or 'miller_madow', got {bias_correction!r}")
    if estimator == "ksg" and (not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive int, got {k!r}")
    if metric is not None:
        check_metric(metric)
    x, y = check_pair(x, y, min_samples=k + 1 if estimator == "ksg" else 1,
                      needs=f"KSG with k={k}" if estimator == "ksg" else None)
    if estimator in DISTANCE_ESTIMATORS or reduction == "per_dim" or (estimator == "ksg" and reduction == "projection"):
        check_same_columns(x, y, "row-wise" if estimator in DISTANCE_ESTIMATORS else reduction)
    if estimator == "hist" and reduction == "pooled" and x.shape[1] != y.shape[1]:
        check_same_columns(x, y, reduction)
    be = resolve_backend(backend, x.device)

    if estimator == "cosine":
        return cosine_ref(x, y)
    if estimator == "angular":
        return angular_ref(x, y)
    if estimator == "gaussian":
        if reduction == "joint":  # O(n (dx + dy)^2) in float64 torch on the data's device, for every backend
            return gaussian_joint(x, y)
        if be == "native":
            return cpu.gaussian_cpu(x, y, reduction=reduction)
        return gaussian_ref(x, y, reduction=reduction)
    if estimator == "hist" and reduction == "joint":
        check_joint_hist(x.shape[1], y.shape[1])
        nb = joint_bins(bins, x.shape[0], x.shape[1] + y.shape[1])
        mm = bias_correction == "miller_madow"
        if be == "reference":
            return hist_joint_ref(x, y, bins=nb, binning=binning, bias_correction=bias_correction)
        return hist_joint(x, y, bins=nb, binning=binning, miller_madow=mm, backend=be)
    if estimator == "hist":
        n_pair = x.shape[0] * (x.shape[1] if reduction == "pooled" else 1)
        nb = resolve_bins(bins, n_pair)
        if be == "native":
            return cpu.hist_cpu(x, y, bins=nb, binning=binning, reduction=reduction,
                                miller_madow=bias_correction == "miller_madow")
        if be == "triton":
            from miprun.kernels import hist as khist  # triton is optional: loaded only when a kernel runs
            counts = khist.hist_counts_triton(x, y, bins=nb, binning=binning, reduction=reduction)
            return mi_from_counts(counts, miller_madow=bias_correction == "miller_madow")
        return hist_ref(x, y, bins=nb, binning=binning, reduction=reduction, bias_correction=bias_correction)
    # ksg; reduction="joint" keeps every column and row: the core's exact search, or the Triton kernel
    xs, ys = prepare(x, y, reduction=reduction, max_samples=max_samples, seed=seed, projection_dim=projection_dim)
    return ksg_prepared(xs, ys, k, per_dim=reduction == "per_dim", backend=be,
                        metric=resolve_metric(metric, reduction))
