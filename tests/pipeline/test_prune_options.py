"""PruneOptions: flat keywords routed to their step, the pairs checked together, max_run, JSON round trip; OutputOptions."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miprun.calibration.options import CalibrationOptions
from miprun.hidden.options import ExecutionOptions
from miprun.output.options import OutputOptions
from miprun.pipeline.options import PruneOptions
from miprun.scoring.options import ScoringOptions
from miprun.selection.options import SelectionOptions
from miprun.selection.select import SELECTORS
from miprun.util.options import route

SECTIONS = ("calibration", "execution", "scoring", "selection", "heal", "output")


# ----------------------------------------------------------------------------- route
def test_route_sends_seed_to_every_class_that_has_it():
    calib, scoring = route({"seed": 3, "n_samples": 4, "k": 5}, CalibrationOptions, ScoringOptions)
    assert calib == {"seed": 3, "n_samples": 4}
    assert scoring == {"seed": 3, "k": 5}
    assert route({}, CalibrationOptions, ScoringOptions) == [{}, {}]


def test_route_refuses_unknown_keywords_with_a_type_error():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['n_sample', 'speed'\]"):
        route({"n_sample": 4, "speed": 1, "seed": 0}, CalibrationOptions, ScoringOptions)
    with pytest.raises(TypeError, match=r"\['k'\]"):  # known to ScoringOptions, not routed there
        route({"k": 3}, CalibrationOptions)


def test_from_flat_routes_each_keyword_to_its_step():
    options = PruneOptions.from_flat(num_remove=2, selector="optimal", estimator="ksg", k=5, seed=7, n_samples=4,
                                     seq_len=64, batch_size=3, device="cpu", out_dir="pruned", plots=False)
    assert options.selection == SelectionOptions(num_remove=2, selector="optimal")
    assert options.scoring == ScoringOptions(estimator="ksg", k=5, seed=7)
    assert options.calibration == CalibrationOptions(n_samples=4, seq_len=64, seed=7)
    assert options.execution == ExecutionOptions(batch_size=3, device="cpu")
    assert options.output == OutputOptions(out_dir="pruned", plots=False)


def test_from_flat_seed_seeds_both_calibration_and_scoring():
    options = PruneOptions.from_flat(num_remove=1, seed=11)
    assert options.calibration.seed == options.scoring.seed == 11


def test_from_flat_refuses_unknown_keywords():
    with pytest.raises(TypeError, match=r"\['num_sample'\]"):
        PruneOptions.from_flat(num_remove=1, num_sample=4)


def test_from_flat_select_options_are_merged():
    assert PruneOptions.from_flat(num_remove=1, select_options={"scale": "normalised"}).selection.scale == "normalised"


def test_num_blocks_is_a_deprecated_alias_of_num_remove():
    with pytest.warns(DeprecationWarning, match=r"num_blocks.*num_remove"):
        old = PruneOptions.from_flat(num_blocks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name does not warn
        new = PruneOptions.from_flat(num_remove=2)
    assert old == new and old.to_dict() == new.to_dict()
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="num_remove only"):
        PruneOptions.from_flat(num_blocks=2, num_remove=2)


# ----------------------------------------------------------------------------- selector and estimator
@pytest.mark.parametrize("selector, estimator", [("shortgpt", "cosine"), ("gromov", "angular")])
def test_a_baseline_selector_gets_its_distance(selector, estimator):
    assert PruneOptions.from_flat(num_remove=1, selector=selector).scoring.estimator == estimator
    assert PruneOptions.from_flat(num_remove=1, selector=selector, estimator=estimator).scoring.estimator == estimator
    with pytest.raises(ValueError, match=rf"selector '{selector}' reads '{estimator}'.*estimator='hist'"):
        PruneOptions.from_flat(num_remove=1, selector=selector, estimator="hist")
    # Built from the step objects, the same pair is checked.
    with pytest.raises(ValueError, match=rf"selector '{selector}'.*estimator='hist'"):
        PruneOptions(selection=SelectionOptions(num_remove=1, selector=selector), scoring=ScoringOptions())
    assert PruneOptions(selection=SelectionOptions(num_remove=1, selector=selector),
                        scoring=ScoringOptions(estimator=estimator)).scoring.estimator == estimator


@pytest.mark.parametrize("estimator", ["cosine", "angular"])
def test_greedy_with_a_distance_is_refused(estimator):
    with pytest.raises(ValueError, match=rf"selector 'greedy' reads mutual information; estimator='{estimator}'"):
        PruneOptions.from_flat(num_remove=1, selector="greedy", estimator=estimator)
    with pytest.raises(ValueError, match=rf"estimator='{estimator}'"):
        PruneOptions(selection=SelectionOptions(num_remove=1, selector="greedy"),
                     scoring=ScoringOptions(estimator=estimator))


def test_an_mi_selector_defaults_to_hist():
    assert PruneOptions.from_flat(num_remove=1).scoring.estimator == "hist"
    assert PruneOptions.from_flat(num_remove=1, estimator="gaussian").scoring.estimator == "gaussian"


# ----------------------------------------------------------------------------- the whole object
def test_sections_must_be_their_options_class():
    with pytest.raises(TypeError, match=r"PruneOptions.scoring must be a ScoringOptions, got dict"):
        PruneOptions(selection=SelectionOptions(num_remove=1), scoring={"estimator": "hist"})
    with pytest.raises(TypeError, match=r"PruneOptions.selection must be a SelectionOptions"):
        PruneOptions(selection={"num_remove": 1})


def test_offload_needs_an_output_folder():
    with pytest.raises(ValueError, match=r"offload=True.*out_dir"):
        PruneOptions.from_flat(num_remove=1, offload=True)
    assert PruneOptions.from_flat(num_remove=1, offload=True, out_dir="o").execution.offload is True


def test_a_step_error_names_its_field():
    with pytest.raises(ValueError, match=r"ratio must be a fraction in \(0, 1\)"):
        PruneOptions.from_flat(ratio=1.5)
    with pytest.raises(ValueError, match=r"num_remove.*ratio"):
        PruneOptions.from_flat(num_remove=1, ratio=0.5)
    with pytest.raises(ValueError, match=r"num_remove.*ratio"):
        PruneOptions.from_flat()
    with pytest.raises(ValueError, match=r"\bbins\b"):
        PruneOptions.from_flat(num_remove=1, bins=300)
    with pytest.raises(ValueError, match=r"\bn_samples\b"):
        PruneOptions.from_flat(num_remove=1, n_samples=True)
    with pytest.raises(ValueError, match=r"\bdtype\b"):
        PruneOptions.from_flat(num_remove=1, dtype="int4")
    with pytest.raises(ValueError, match=r"max_memory.*device_map"):
        PruneOptions.from_flat(num_remove=1, max_memory={"cpu": "1GiB"})


def test_frozen():
    options = PruneOptions.from_flat(num_remove=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.scoring = ScoringOptions(estimator="ksg")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.scoring.estimator = "ksg"


@pytest.mark.parametrize("selector", SELECTORS)
def test_max_run(selector):
    single = selector in ("greedy", "shortgpt")
    options = PruneOptions.from_flat(num_remove=3, selector=selector, verify=0)
    assert options.max_run(3, 8) == (1 if single else 3)
    assert options.max_run(12, 8) == (1 if single else 8)  # never longer than the model
    explicit = PruneOptions.from_flat(num_remove=3, selector=selector, max_run=2, verify=0)
    assert explicit.max_run(3, 8) == 2  # an explicit max_run wins, single-block selector or not
    # the default verify="auto" verifies wherever the model is (its portfolio reads runs), with 2+ windows
    auto = PruneOptions.from_flat(num_remove=3, selector=selector)
    assert auto.max_run(3, 8) == auto.resolved(8).max_run(3, 8) == 3
    if selector != "sleb":
        for placement in (dict(offload=True, out_dir="x"), dict(device_map="auto")):
            placed = PruneOptions.from_flat(num_remove=3, selector=selector, **placement).resolved(8)
            assert placed.selection.verify == 2 and placed.max_run(3, 8) == 3
        one = PruneOptions.from_flat(num_remove=3, selector=selector).resolved(1)
        assert one.selection.verify == 0 and one.max_run(3, 8) == (1 if single else 3)
    with pytest.raises(ValueError, match=r"max_run=9 but the model has 8 blocks"):
        PruneOptions.from_flat(num_remove=3, selector=selector, max_run=9).max_run(3, 8)


def test_from_dict_refuses_unknown_sections_and_keys():
    data = PruneOptions.from_flat(num_remove=1).to_dict()
    with pytest.raises(ValueError, match=r"unknown option sections \['scorer'\]"):
        PruneOptions.from_dict({**data, "scorer": {}})
    with pytest.raises(ValueError, match=r"ScoringOptions does not know \['estimater'\]"):
        PruneOptions.from_dict({**data, "scoring": {**data["scoring"], "estimater": "ksg"}})
    with pytest.raises(ValueError, match=r"SelectionOptions does not know \['num_blocks'\]"):
        PruneOptions.from_dict({**data, "selection": {"num_blocks": 2}})


def test_from_dict_checks_the_pairs_again():
    data = PruneOptions.from_flat(num_remove=1, selector="shortgpt").to_dict()
    data["scoring"]["estimator"] = "hist"
    with pytest.raises(ValueError, match=r"selector 'shortgpt'.*estimator='hist'"):
        PruneOptions.from_dict(data)


def test_sections_left_out_take_their_defaults():
    assert PruneOptions.from_dict({"selection": {"num_remove": 2}}) == PruneOptions(
        selection=SelectionOptions(num_remove=2))


def test_to_dict_has_every_section():
    data = PruneOptions.from_flat(num_remove=1).to_dict()
    assert set(data) == set(SECTIONS)
    assert data["selection"] == SelectionOptions(num_remove=1).to_dict()


# ----------------------------------------------------------------------------- OutputOptions
@pytest.mark.parametrize("field, value", [
    ("out_dir", ""), ("out_dir", 3), ("out_dir", True), ("out_dir", ["a"]),
    ("overwrite", 1), ("overwrite", "yes"), ("overwrite", None),
    ("plots", 0), ("plots", "no"), ("plots", None),
])
def test_output_bad_value_is_refused_naming_its_field(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        OutputOptions(**{field: value})


def test_output_path_is_recorded_as_a_string(tmp_path):
    options = OutputOptions(out_dir=tmp_path / "o")
    assert options.out_dir == str(tmp_path / "o") and isinstance(options.out_dir, str)
    assert OutputOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.out_dir = "elsewhere"
    with pytest.raises(ValueError, match=r"OutputOptions does not know \['out'\]"):
        OutputOptions.from_dict({"out": "x"})


# ----------------------------------------------------------------------------- round trip
_FLAT = st.fixed_dictionaries(
    {},
    optional={
        "selector": st.sampled_from(SELECTORS),
        "scale": st.sampled_from(["raw", "normalised"]),
        "allow_touching": st.booleans(),
        "reduction": st.just("pooled"),
        "max_run": st.none() | st.integers(1, 32),
        "bins": st.integers(2, 256) | st.sampled_from(["auto", "sqrt", "sturges", "rice"]),
        "k": st.integers(1, 20),
        "max_samples": st.none() | st.integers(2, 10 ** 6),
        "skip_first": st.integers(0, 8),
        "seed": st.integers(-(2 ** 31), 2 ** 31),
        "n_samples": st.integers(1, 4096),
        "seq_len": st.none() | st.integers(1, 8192),
        "batch_size": st.integers(1, 64),
        "dtype": st.sampled_from(["auto", "bfloat16", "float32"]),
        "device": st.sampled_from(["cpu", "cuda:0"]),
        "overwrite": st.booleans(),
        "plots": st.booleans(),
        "out_dir": st.none() | st.sampled_from(["pruned", "/tmp/x/y"]),
    })


@settings(max_examples=200, deadline=None)
@given(flat=_FLAT, how=st.one_of(st.builds(dict, num_remove=st.integers(1, 100)),
                                 st.builds(dict, ratio=st.floats(0.01, 0.99))))
def test_json_round_trip(flat, how):
    options = PruneOptions.from_flat(**flat, **how)
    data = json.loads(json.dumps(options.to_dict()))
    back = PruneOptions.from_dict(data)
    assert back == options and back.to_dict() == options.to_dict()


def test_json_round_trip_of_a_device_map_run():
    options = PruneOptions.from_flat(num_remove=2, device_map="balanced", max_memory={0: "10GiB", "cpu": "30GiB"},
                                     out_dir=Path("pruned"))
    back = PruneOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    assert back == options and back.execution.max_memory == {0: "10GiB", "cpu": "30GiB"}
