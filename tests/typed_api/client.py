"""A client of miprun's public API, written as another tool would: checked by mypy --strict, never run.

tests/test_typing.py type-checks it against the installed package (PEP 561: the wheel ships
py.typed), so every annotation of the public API a caller touches must hold.
"""

from __future__ import annotations

from pathlib import Path
from typing_extensions import assert_type

import numpy as np
import numpy.typing as npt

import miprun
from miprun.mi.bmi_adapter import MiprunEstimator, standard_estimators


def estimates(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> dict[str, float]:
    joint = miprun.mutual_information(x, y, estimator="ksg", reduction="joint", k=5, seed=1, max_samples=None)
    assert_type(joint, float)
    maxnorm = miprun.mutual_information(x, y, estimator="ksg", reduction="joint", metric="chebyshev")
    gauss = miprun.mutual_information(x, y, estimator="gaussian", reduction="joint", backend="native")
    hist = miprun.mutual_information(x, y, estimator="hist", reduction="joint", bins=8, binning="uniform",
                                     bias_correction="miller_madow")
    pooled = miprun.mutual_information(x, y, bins="auto", projection_dim=4)
    bmi = MiprunEstimator("ksg", k=5, seed=0, metric="euclidean").estimate(x, y)
    assert_type(bmi, float)
    every: dict[str, MiprunEstimator] = standard_estimators(k=3)
    return {"ksg": joint, "ksg_maxnorm": maxnorm, "gaussian": gauss, "hist": hist, "pooled": pooled, "bmi": bmi,
            "n": float(len(every))}


def options() -> miprun.PruneOptions:
    return miprun.PruneOptions(
        selection=miprun.SelectionOptions(num_remove=8, selector="optimal"),
        scoring=miprun.ScoringOptions(estimator="ksg", reduction="pooled", k=3),
        calibration=miprun.CalibrationOptions(n_samples=64, seq_len=1024),
        execution=miprun.ExecutionOptions(device="cpu", dtype="float32"),
        heal=miprun.HealOptions(heal="linear"),
        output=miprun.OutputOptions(out_dir="./pruned"),
    )


def pipeline(model_dir: Path, calibration: Path) -> list[int]:
    result = miprun.prune(str(model_dir), str(calibration), options())
    assert_type(result, miprun.PruneResult)
    plan: miprun.Plan = result.plan
    removed: list[int] = plan.removed
    table = miprun.score_blocks(str(model_dir), str(calibration), miprun.ScoringOptions(max_run=2))
    assert_type(table, miprun.ScoreTable)
    again = miprun.select(table, 2, selector="fast_block_select")
    assert_type(again, miprun.Plan)
    return removed + again.removed


def version() -> str:
    return miprun.__version__
