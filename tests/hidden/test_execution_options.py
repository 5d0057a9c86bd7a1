"""ExecutionOptions: where and how the model runs; conflicting ways are refused at construction; read back from JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miprun.hidden.options import DTYPE_NAMES, ExecutionOptions
from miprun.hidden.sources import DEVICE_MAPS


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", True), ("batch_size", 8.0), ("batch_size", None),
    ("dtype", "int8"), ("dtype", "float64"), ("dtype", "half"), ("dtype", torch.int8), ("dtype", torch.float64),
    ("offload", "yes"), ("offload", None), ("offload", "never"),
    ("device_map", "everywhere"), ("device_map", "cuda"),
    ("trust_remote_code", 1), ("trust_remote_code", "yes"), ("trust_remote_code", None),
])
def test_a_bad_value_is_refused_naming_its_field(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        ExecutionOptions(**{field: value})


@pytest.mark.parametrize("value", [1, 0, 1.0])
def test_offload_takes_a_bool_not_a_number(value):
    # 1 == True in Python: a number slipping through would bypass the checks made with "offload is True"
    # (offload with a device map, offload without an output folder).
    with pytest.raises(ValueError, match=r"\boffload\b"):
        ExecutionOptions(offload=value)


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_every_dtype_name_is_accepted(name):
    assert ExecutionOptions(dtype=name).dtype == name


def test_a_torch_dtype_is_recorded_by_its_name():
    assert ExecutionOptions(dtype=torch.bfloat16).dtype == "bfloat16"
    assert ExecutionOptions(dtype=torch.float16).load_dtype == "float16"
    assert ExecutionOptions(dtype="auto").load_dtype is None and ExecutionOptions().load_dtype is None


def test_a_torch_device_is_recorded_by_its_name():
    assert ExecutionOptions(device=torch.device("cpu")).device == "cpu"


def test_device_map_and_device_together_are_refused():
    for device_map in (*DEVICE_MAPS, {"": "cpu"}):
        with pytest.raises(ValueError, match=r"device_map.*device.*not both"):
            ExecutionOptions(device_map=device_map, device="cpu")


def test_max_memory_needs_a_named_device_map():
    with pytest.raises(ValueError, match=r"max_memory.*device_map"):
        ExecutionOptions(max_memory={"cpu": "1GiB"})
    with pytest.raises(ValueError, match=r"max_memory.*device_map"):
        ExecutionOptions(max_memory={"cpu": "1GiB"}, device_map={"": "cpu"})
    for device_map in DEVICE_MAPS:
        assert ExecutionOptions(max_memory={"cpu": "1GiB"}, device_map=device_map).max_memory == {"cpu": "1GiB"}


def test_offload_with_a_device_map_is_refused():
    for device_map in (*DEVICE_MAPS, {"": "cpu"}):
        with pytest.raises(ValueError, match=r"offload and device_map"):
            ExecutionOptions(offload=True, device_map=device_map)


def test_max_memory_gpu_indices_come_back_as_ints_from_json():
    options = ExecutionOptions(device_map="auto", max_memory={0: "20GiB", 1: "20GiB", "cpu": "60GiB"})
    data = json.loads(json.dumps(options.to_dict()))
    assert data["max_memory"] == {"0": "20GiB", "1": "20GiB", "cpu": "60GiB"}  # JSON keys are strings
    back = ExecutionOptions.from_dict(data)
    assert back.max_memory == {0: "20GiB", 1: "20GiB", "cpu": "60GiB"}
    assert back == options


def test_frozen():
    options = ExecutionOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.device = "cuda"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.offload = True
    assert options.replace(device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="device_map"):
        options.replace(device="cpu", device_map="auto")


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match=r"ExecutionOptions does not know \['devices'\]"):
        ExecutionOptions.from_dict({"devices": "cpu"})


_MEMORY = st.dictionaries(st.integers(0, 7) | st.just("cpu"), st.sampled_from(["1GiB", "20GiB", "512MiB"]),
                          min_size=1, max_size=3)


@st.composite
def execution_options(draw):
    how = draw(st.sampled_from(["device", "named_map", "dict_map", "offload"]))
    kw = dict(batch_size=draw(st.integers(1, 4096)), dtype=draw(st.none() | st.sampled_from(DTYPE_NAMES)),
              trust_remote_code=draw(st.booleans()))
    if how == "device":
        kw.update(device=draw(st.none() | st.sampled_from(["cpu", "cuda", "cuda:1", "mps"])),
                  offload=draw(st.sampled_from([False, "auto"])))
    elif how == "named_map":
        kw.update(device_map=draw(st.sampled_from(DEVICE_MAPS)), max_memory=draw(st.none() | _MEMORY),
                  offload=draw(st.sampled_from([False, "auto"])))
    elif how == "dict_map":
        kw.update(device_map=draw(st.dictionaries(st.sampled_from(["model.embed_tokens", "model.layers", "lm_head"]),
                                                  st.integers(0, 3) | st.just("cpu"), min_size=1)))
    else:
        kw.update(offload=True, device=draw(st.none() | st.just("cpu")))
    return ExecutionOptions(**kw)


@settings(max_examples=200, deadline=None)
@given(execution_options())
def test_json_round_trip(options):
    data = json.loads(json.dumps(options.to_dict()))
    assert set(data) == set(ExecutionOptions.field_names())
    back = ExecutionOptions.from_dict(data)
    assert back == options and back.to_dict() == options.to_dict()
