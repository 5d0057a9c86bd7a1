"""ScoreTable and Plan: orientation, normalisation, round trips, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from miprun.selection.plan import Plan, runs_of
from miprun.scoring.table import ScoreTable, information_coefficient, redundancy


def _random_table(rng: np.random.Generator, t: int, r: int, estimator: str = "hist") -> ScoreTable:
    vals = rng.uniform(0.05, 2.0, size=(t, r))
    for s in range(t):
        for length in range(1, r + 1):
            if s + length > t:
                vals[s, length - 1] = np.nan
    return ScoreTable(vals, estimator, {"seed": 1})


def test_information_coefficient_matches_gaussian_rho():
    # for a bivariate normal, IC(MI(rho)) = |rho|
    for rho in (0.1, 0.5, 0.9, 0.999):
        mi = -0.5 * math.log(1 - rho * rho)
        assert information_coefficient(mi) == pytest.approx(rho, rel=1e-12)
    assert information_coefficient(0.0) == 0.0
    assert information_coefficient(-0.3) == 0.0  # negative estimates clip to 0


def test_redundancy_orientation_per_estimator():
    # more MI -> more redundant; more distance -> less redundant
    assert redundancy(np.array([0.1, 1.0]), "hist")[1] > redundancy(np.array([0.1, 1.0]), "hist")[0]
    assert redundancy(np.array([0.1, 1.0]), "cosine")[1] < redundancy(np.array([0.1, 1.0]), "cosine")[0]
    assert redundancy(np.array([0.1, 0.9]), "angular")[1] < redundancy(np.array([0.1, 0.9]), "angular")[0]
    with pytest.raises(ValueError, match="unknown estimator"):
        redundancy(np.array([0.1]), "nope")


def test_table_round_trip_and_lookup():
    rng = np.random.default_rng(7)
    table = _random_table(rng, 6, 3)
    back = ScoreTable.from_dict(table.to_dict())
    np.testing.assert_array_equal(np.isnan(back.values), np.isnan(table.values))
    np.testing.assert_allclose(back.values[~np.isnan(back.values)], table.values[~np.isnan(table.values)])
    assert table.score(2, 3) == table.values[2, 2]
    with pytest.raises(IndexError, match="outside this table"):
        table.score(4, 3)
    norm = table.normalised()
    assert np.all((norm[~np.isnan(norm)] >= 0) & (norm[~np.isnan(norm)] < 1))
    assert np.isnan(norm[5, 1])


def test_plan_runs_kept_and_validation():
    plan = Plan([7, 2, 3, 9, 8], num_blocks=12, selector="optimal")
    assert plan.removed == [2, 3, 7, 8, 9]
    assert plan.runs == [(2, 2), (7, 3)]
    assert plan.kept == [0, 1, 4, 5, 6, 10, 11]
    assert plan.to_dict()["pruned_blocks"] == [2, 3, 7, 8, 9]
    assert runs_of([]) == []
    with pytest.raises(ValueError, match="twice"):
        Plan([1, 1], num_blocks=4, selector="x")
    with pytest.raises(ValueError, match="outside"):
        Plan([4], num_blocks=4, selector="x")
