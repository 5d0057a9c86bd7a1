"""SelectionOptions: how many blocks and which selector; refused at construction naming the field; read back from JSON."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miprun.selection.options import AUTO_REFINE, BASELINE_ESTIMATORS, SINGLE_BLOCK_SELECTORS, SelectionOptions
from miprun.selection.select import SCALES, SELECTORS


def test_exactly_one_of_num_remove_and_ratio():
    for kwargs in ({}, {"num_remove": 2, "ratio": 0.25}, {"num_remove": None, "ratio": None}):
        with pytest.raises(ValueError, match=r"num_remove.*ratio"):
            SelectionOptions(**kwargs)
    assert SelectionOptions(num_remove=2).ratio is None
    assert SelectionOptions(ratio=0.25).num_remove is None


@pytest.mark.parametrize("value", [0, -1, True, False, 2.0, "2"])
def test_num_remove_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match=r"\bnum_remove\b"):
        SelectionOptions(num_remove=value)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, -0.25, 1.5, True, "0.5", math.nan, math.inf])
def test_ratio_must_be_a_fraction_in_the_open_unit_interval(value):
    with pytest.raises(ValueError, match=r"\bratio\b"):
        SelectionOptions(ratio=value)


@pytest.mark.parametrize("field, value", [
    ("selector", "random"), ("selector", None), ("selector", "Optimal"),
    ("scale", "log"), ("scale", None),
    ("log_base", 1), ("log_base", 0.5), ("log_base", True), ("log_base", "e"), ("log_base", None),
    ("allow_touching", 1), ("allow_touching", "yes"), ("allow_touching", None),
    ("max_iterations", 0), ("max_iterations", True), ("max_iterations", 1.5),
    ("max_subsets", 0), ("max_subsets", True), ("max_subsets", 1e6),
])
def test_a_bad_value_is_refused_naming_its_field(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        SelectionOptions(num_remove=1, **{field: value})


def test_count():
    assert SelectionOptions(num_remove=3).count(8) == 3
    assert SelectionOptions(ratio=0.25).count(8) == 2
    assert SelectionOptions(ratio=0.3).count(10) == 3
    with pytest.raises(ValueError, match=r"num_remove=8 but the model has 8 blocks"):
        SelectionOptions(num_remove=8).count(8)
    with pytest.raises(ValueError, match=r"ratio=0.05 of the model's 8 blocks rounds to 0"):
        SelectionOptions(ratio=0.05).count(8)
    with pytest.raises(ValueError, match=r"ratio=0.95 of the model's 8 blocks rounds to 8"):
        SelectionOptions(ratio=0.95).count(8)


@pytest.mark.parametrize("selector, estimator", sorted(BASELINE_ESTIMATORS.items()))
def test_a_baseline_selector_reads_its_own_distance(selector, estimator):
    options = SelectionOptions(num_remove=1, selector=selector)
    assert options.estimator_for(None) == estimator
    assert options.estimator_for(estimator) == estimator
    for other in ("hist", "ksg", "gaussian", *(e for e in BASELINE_ESTIMATORS.values() if e != estimator)):
        with pytest.raises(ValueError, match=rf"selector '{selector}' reads '{estimator}'.*estimator='{other}'"):
            options.estimator_for(other)


@pytest.mark.parametrize("selector", [s for s in SELECTORS if s not in BASELINE_ESTIMATORS])
def test_an_mi_selector_refuses_the_baseline_distances(selector):
    options = SelectionOptions(num_remove=1, selector=selector)
    assert options.estimator_for(None) == "hist"
    for estimator in ("hist", "ksg", "gaussian"):
        assert options.estimator_for(estimator) == estimator
    for distance in ("cosine", "angular"):
        with pytest.raises(ValueError, match=rf"selector '{selector}' reads mutual information; "
                                             rf"estimator='{distance}'"):
            options.estimator_for(distance)


def test_greedy_with_cosine_is_refused():
    with pytest.raises(ValueError, match=r"selector 'greedy'.*estimator='cosine'"):
        SelectionOptions(num_remove=1, selector="greedy").estimator_for("cosine")


def test_single_block_selectors():
    assert set(SINGLE_BLOCK_SELECTORS) == {"greedy", "shortgpt"}
    assert set(SINGLE_BLOCK_SELECTORS) <= set(SELECTORS)


def test_frozen():
    options = SelectionOptions(num_remove=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.num_remove = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.selector = "optimal"
    assert options.replace(selector="optimal").selector == "optimal"
    with pytest.raises(ValueError, match=r"num_remove.*ratio"):
        options.replace(ratio=0.5)  # both: still checked


def test_select_and_verify_kwargs():
    options = SelectionOptions(num_remove=2, selector="optimal", scale="normalised", log_base=2.0,
                               allow_touching=False, max_iterations=7, max_subsets=11, verify=0)
    assert options.select_kwargs() == {"selector": "optimal", "scale": "normalised", "log_base": 2.0,
                                       "allow_touching": False, "max_iterations": 7, "max_subsets": 11}
    with pytest.raises(ValueError, match="decided by resolve"):
        options.replace(verify="auto").verify_kwargs(8)
    kwargs = options.replace(verify=3).verify_kwargs(8)
    assert kwargs["k"] == 3 and kwargs["refine_rounds"] == AUTO_REFINE  # refine="auto" follows verify
    assert kwargs["selector"] == "optimal" and kwargs["scale"] == "normalised" and kwargs["criterion"] == "kl"
    assert kwargs["screen"] is True  # "auto": a quarter of 8 held-back windows
    assert options.replace(verify=3, refine=0).verify_kwargs(8)["refine_rounds"] == 0
    assert options.replace(verify=3, screen=0).verify_kwargs(8)["screen"] is False
    assert options.replace(verify=3).verify_kwargs(1)["screen"] is False  # one window: nothing to screen on
    assert options.screen_windows(8) == 2 and options.replace(screen=5).screen_windows(3) == 3


def test_refine_is_resolved_with_verify_and_refused_without_it():
    auto = SelectionOptions(num_remove=2)
    assert auto.resolve(n_windows=8).refine == AUTO_REFINE
    assert auto.resolve(n_windows=1).refine == 0
    assert SelectionOptions(num_remove=2, refine=3).resolve(n_windows=8).refine == 3
    with pytest.raises(ValueError, match="drop --refine"):
        SelectionOptions(num_remove=2, refine=3).resolve(n_windows=1)
    for bad in (dict(verify=0, refine=1), dict(selector="sleb", refine=1)):
        with pytest.raises(ValueError, match="needs verify"):
            SelectionOptions(num_remove=2, **bad)
    with pytest.raises(ValueError, match="refine must be an int"):
        SelectionOptions(num_remove=2, refine=-1)
    for bad in (dict(criterion="ppl"), dict(screen=-1), dict(screen=True)):
        with pytest.raises(ValueError):
            SelectionOptions(num_remove=2, **bad)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match=r"SelectionOptions does not know \['num_blocks'\]"):
        SelectionOptions.from_dict({"num_blocks": 2})
    assert SelectionOptions.from_dict({"ratio": 0.5}) == SelectionOptions(ratio=0.5)


@st.composite
def selection_options(draw):
    count = draw(st.one_of(st.builds(dict, num_remove=st.integers(1, 10 ** 6)),
                           st.builds(dict, ratio=st.floats(min_value=1e-9, max_value=1 - 1e-9))))
    return SelectionOptions(
        **count,
        selector=draw(st.sampled_from(SELECTORS)),
        scale=draw(st.sampled_from(SCALES)),
        log_base=draw(st.floats(min_value=1.0, max_value=1e6, exclude_min=True) | st.integers(2, 100)),
        allow_touching=draw(st.booleans()),
        max_iterations=draw(st.integers(1, 10 ** 6)),
        max_subsets=draw(st.integers(1, 10 ** 12)),
    )


@settings(max_examples=200, deadline=None)
@given(selection_options())
def test_json_round_trip(options):
    data = json.loads(json.dumps(options.to_dict()))
    assert set(data) == set(SelectionOptions.field_names())
    back = SelectionOptions.from_dict(data)
    assert back == options and back.to_dict() == options.to_dict()
