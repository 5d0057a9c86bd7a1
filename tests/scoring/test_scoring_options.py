"""ScoringOptions: every bad value refused at construction naming its field; frozen; read back from JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miprun.mi.backend import BACKENDS
from miprun.mi.binning import BIN_RULES, MAX_BINS
from miprun.mi.hist import BIAS_CORRECTIONS
from miprun.scoring.options import BINNINGS, TABLE_REDUCTIONS, ScoringOptions


@pytest.mark.parametrize("estimator, reduction", [(e, r) for e, rs in TABLE_REDUCTIONS.items() for r in rs])
def test_every_supported_pair_is_accepted(estimator, reduction):
    assert ScoringOptions(estimator=estimator, reduction=reduction).reduction == reduction


@pytest.mark.parametrize("estimator, reduction", [("hist", "projection"), ("gaussian", "projection"),
                                                  ("hist", "mean"), ("ksg", "pool")])
def test_a_reduction_the_estimator_lacks_is_refused(estimator, reduction):
    with pytest.raises(ValueError, match=rf"estimator '{estimator}' supports reduction .*'{reduction}'"):
        ScoringOptions(estimator=estimator, reduction=reduction)


@pytest.mark.parametrize("estimator", ["hist", "ksg", "gaussian", "cosine"])
def test_joint_is_not_a_table_reduction(estimator):
    # mutual_information takes reduction="joint"; a score table of hidden states does not
    with pytest.raises(ValueError, match="'joint'.*not a score-table reduction.*mutual_information"):
        ScoringOptions(estimator=estimator, reduction="joint")


def test_the_baselines_ignore_the_reduction():
    # cosine and angular are distances between states, not MI: the reduction does not apply.
    for estimator in ("cosine", "angular"):
        assert ScoringOptions(estimator=estimator, reduction="per_dim").estimator == estimator


@pytest.mark.parametrize("field, value", [
    ("estimator", "mine"), ("estimator", None), ("estimator", "HIST"),
    ("max_run", 0), ("max_run", -1), ("max_run", True), ("max_run", 2.0), ("max_run", "2"),
    ("bins", 1), ("bins", 0), ("bins", MAX_BINS + 1), ("bins", True), ("bins", False), ("bins", 8.0),
    ("bins", "fd"), ("bins", None),
    ("binning", "log"), ("binning", None),
    ("bias_correction", "jackknife"), ("bias_correction", True),
    ("k", 0), ("k", True), ("k", 3.0), ("k", None),
    ("max_samples", 1), ("max_samples", True), ("max_samples", 10.5),
    ("projection_dim", 0), ("projection_dim", True), ("projection_dim", None),
    ("skip_first", -1), ("skip_first", True), ("skip_first", None),
    ("edge_tokens", 0), ("edge_tokens", True), ("edge_tokens", 1e5),
    ("seed", True), ("seed", False), ("seed", 1.0), ("seed", "3"), ("seed", None),
    ("backend", "cuda"), ("backend", None),
])
def test_a_bad_value_is_refused_naming_its_field(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        ScoringOptions(**{field: value})


@pytest.mark.parametrize("bins", [2, 16, MAX_BINS, *BIN_RULES])
def test_bins_in_range_or_a_rule_are_accepted(bins):
    assert ScoringOptions(bins=bins).bins == bins


def test_frozen():
    options = ScoringOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.estimator = "ksg"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 1
    # replace() is the way to change one, and it validates again.
    assert options.replace(estimator="ksg").estimator == "ksg"
    with pytest.raises(ValueError, match="bins"):
        options.replace(bins=1)


def test_from_dict_refuses_unknown_keys():
    data = ScoringOptions().to_dict()
    with pytest.raises(ValueError, match=r"ScoringOptions does not know \['bin'\]"):
        ScoringOptions.from_dict({**data, "bin": 8})
    # Missing keys take their defaults.
    assert ScoringOptions.from_dict({"estimator": "ksg"}) == ScoringOptions(estimator="ksg")


@st.composite
def scoring_options(draw):
    estimator = draw(st.sampled_from(sorted(TABLE_REDUCTIONS)))
    return ScoringOptions(
        estimator=estimator,
        reduction=draw(st.sampled_from(TABLE_REDUCTIONS[estimator])),
        max_run=draw(st.none() | st.integers(1, 64)),
        bins=draw(st.integers(2, MAX_BINS) | st.sampled_from(BIN_RULES)),
        binning=draw(st.sampled_from(BINNINGS)),
        k=draw(st.integers(1, 50)),
        bias_correction=draw(st.sampled_from(BIAS_CORRECTIONS)),
        max_samples=draw(st.none() | st.integers(2, 10 ** 7)),
        projection_dim=draw(st.integers(1, 4096)),
        skip_first=draw(st.integers(0, 10)),
        edge_tokens=draw(st.integers(1, 10 ** 8)),
        seed=draw(st.integers(-(2 ** 63), 2 ** 63 - 1)),
        backend=draw(st.sampled_from(BACKENDS)),
    )


@settings(max_examples=200, deadline=None)
@given(scoring_options())
def test_json_round_trip(options):
    data = json.loads(json.dumps(options.to_dict()))
    assert set(data) == set(ScoringOptions.field_names())
    back = ScoringOptions.from_dict(data)
    assert back == options and back.to_dict() == options.to_dict()


@pytest.mark.parametrize("max_run, num_remove, num_blocks, expected", [
    (None, 3, 8, 3), (None, None, 8, 1), (None, 0, 8, 1), (None, 12, 8, 8), (2, 5, 8, 2), (8, 1, 8, 8),
])
def test_run_length(max_run, num_remove, num_blocks, expected):
    assert ScoringOptions(max_run=max_run).run_length(num_remove, num_blocks) == expected


def test_an_explicit_max_run_longer_than_the_model_is_refused():
    with pytest.raises(ValueError, match=r"max_run=9 but the model has 8 blocks"):
        ScoringOptions(max_run=9).run_length(2, 8)
