"""CalibrationOptions: refused at construction naming the field; frozen; read back from JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miprun.calibration.options import CalibrationOptions


def test_defaults():
    assert CalibrationOptions() == CalibrationOptions(n_samples=128, seq_len=None, seed=0)


@pytest.mark.parametrize("field, value", [
    ("n_samples", 0), ("n_samples", -3), ("n_samples", True), ("n_samples", 4.0), ("n_samples", None),
    ("n_samples", "4"),
    ("seq_len", 0), ("seq_len", True), ("seq_len", False), ("seq_len", 64.0), ("seq_len", "64"),
    ("seed", True), ("seed", 3.0), ("seed", "3"), ("seed", None),
    ("held_back", 0), ("held_back", 0.6), ("held_back", -0.1), ("held_back", True), ("held_back", "0.25"),
])
def test_a_bad_value_is_refused_naming_its_field(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        CalibrationOptions(**{field: value})


def test_frozen():
    options = CalibrationOptions(n_samples=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.n_samples = 8
    assert options.replace(seq_len=64) == CalibrationOptions(n_samples=4, seq_len=64)
    with pytest.raises(ValueError, match="seq_len"):
        options.replace(seq_len=0)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match=r"CalibrationOptions does not know \['samples'\]"):
        CalibrationOptions.from_dict({"samples": 4})
    assert CalibrationOptions.from_dict({}) == CalibrationOptions()


@settings(max_examples=100, deadline=None)
@given(st.builds(CalibrationOptions, n_samples=st.integers(1, 10 ** 6), seq_len=st.none() | st.integers(1, 10 ** 6),
                 seed=st.integers(-(2 ** 63), 2 ** 63 - 1),
                 held_back=st.floats(min_value=1e-6, max_value=0.5)))
def test_json_round_trip(options):
    data = json.loads(json.dumps(options.to_dict()))
    assert set(data) == {"n_samples", "seq_len", "seed", "held_back"}
    assert CalibrationOptions.from_dict(data) == options
