"""Estimator names and the scale scores are compared on: MI in nats, distances, and both mapped to [0, 1]."""

from __future__ import annotations

import numpy as np

__all__ = ["MI_ESTIMATORS", "DISTANCE_ESTIMATORS", "information_coefficient", "redundancy"]

#: Estimators whose raw value is a mutual information in nats (higher: more redundant).
MI_ESTIMATORS = ("hist", "ksg", "gaussian")
#: Baselines whose raw value is a distance (higher: more important, less redundant).
DISTANCE_ESTIMATORS = ("cosine", "angular")


def information_coefficient(mi):
    """Map MI in nats to the information coefficient of correlation ``sqrt(1 - exp(-2 mi))``.

    It lies in ``[0, 1)`` and equals ``|rho|`` for a bivariate normal, which makes scores
    comparable across estimators and runs. Accepts a float or an array; negative
    estimates are treated as 0.
    """
    arr = np.clip(np.asarray(mi, dtype=np.float64), 0.0, None)
    out = np.sqrt(-np.expm1(-2.0 * arr))
    return float(out) if out.ndim == 0 else out


def redundancy(values, estimator: str):
    """Orient and normalise raw scores: 1 means the run passes its input through unchanged.

    MI estimators map through :func:`information_coefficient`; ``cosine`` (Block
    Influence ``1 - cos`` in ``[0, 2]``) maps to ``1 - BI / 2``; ``angular`` (in ``[0, 1]``)
    to ``1 - angular``. All results lie in ``[0, 1]``; NaN stays NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    if estimator in MI_ESTIMATORS:
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(v), np.nan, information_coefficient(np.nan_to_num(v)))
    if estimator == "cosine":
        return np.clip(1.0 - v / 2.0, 0.0, 1.0)
    if estimator == "angular":
        return np.clip(1.0 - v, 0.0, 1.0)
    raise ValueError(f"unknown estimator {estimator!r}; expected one of {MI_ESTIMATORS + DISTANCE_ESTIMATORS}")
