"""The three block sources give the same states; open_source picks one or says why it cannot."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from miprun.hidden import sources
from miprun.hidden.device_map import DeviceMapSource
from miprun.hidden.in_memory import InMemorySource
from miprun.hidden.runner import iter_hidden_states
from miprun.hidden.sources import BlockSource, open_source, parse_max_memory
from miprun.hidden.stream import StreamedSource
from tiny_models import STREAM_FAMILIES, calibration_ids, save_sharded, tiny_model

SHAPE = dict(n_samples=5, seq_len=12, batch_size=2)


def states(source, ids):
    return list(iter_hidden_states(source, ids, batch_size=2, progress=False))


@pytest.mark.parametrize("model_type", STREAM_FAMILIES)
def test_three_sources_give_identical_states(tmp_path, model_type):
    # Saved to disk and opened by open_source three ways; the loaded model itself as a fourth reference.
    model = tiny_model(model_type, preset="stream")
    folder = save_sharded(model, tmp_path / "m")
    ids = calibration_ids(5, 12, seed=7)
    opened = {
        "in memory": open_source(folder, device="cpu", attn_implementation="eager", **SHAPE),
        "streamed": open_source(folder, offload=True, device="cpu", attn_implementation="eager", **SHAPE),
        "device map": open_source(folder, device_map={"": "cpu"}, attn_implementation="eager", **SHAPE),
    }
    kinds = {"in memory": InMemorySource, "streamed": StreamedSource, "device map": DeviceMapSource}
    ref = states(model, ids)
    assert len(ref) == model.config.num_hidden_layers + 1
    for name, source in opened.items():
        assert isinstance(source, kinds[name]) and isinstance(source, BlockSource)
        assert source.kind == {"in memory": "in_memory", "streamed": "streamed", "device map": "device_map"}[name]
        assert source.num_blocks == len(ref) - 1 and source.config.model_type == model.config.model_type
        got = states(source, ids)
        assert [b for b, _ in got] == [b for b, _ in ref]
        for (b, r), (_, g) in zip(ref, got):
            assert g.device == torch.device("cpu")
            assert torch.equal(g, r), f"{model_type}, {name}: state {b} differs by {(g - r).abs().max().item()}"


def test_a_loaded_model_is_used_as_it_is(tmp_path):
    model = tiny_model("llama", preset="stream")
    source = open_source(model, offload="auto")
    assert isinstance(source, InMemorySource) and source.model is model
    ids = calibration_ids(3, 8)
    for (b, r), (_, g) in zip(states(model, ids), states(source, ids)):
        assert torch.equal(g, r), b


def test_offload_auto_streams_only_what_does_not_fit(tmp_path, monkeypatch):
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
    assert isinstance(open_source(folder, offload="auto", device="cpu", **SHAPE), InMemorySource)
    # the weights take ~180 kB, streaming one block ~75 kB
    monkeypatch.setattr("miprun.hidden.memory.available_bytes", lambda device: 120_000)
    source = open_source(folder, offload="auto", device="cpu", **SHAPE)
    assert isinstance(source, StreamedSource)


def test_the_config_is_read_once_and_trust_remote_code_passed_on(tmp_path, monkeypatch):
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
    calls = []
    real = sources.load_config

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(sources, "load_config", counting)
    monkeypatch.setattr("miprun.hidden.stream.load_config", lambda *a, **k: pytest.fail("config read again"))
    for offload in (True, "auto", False):
        source = open_source(folder, offload=offload, device="cpu", trust_remote_code=True, **SHAPE)
        assert source.config.model_type == "llama"
    assert calls == [{"trust_remote_code": True}] * 3
    # a config the caller already read is used as it is
    given = sources.load_config(folder)
    assert open_source(folder, offload=True, device="cpu", config=given, **SHAPE).config is given
    assert len(calls) == 4  # the line above, not open_source


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True], ids=["not a tty", "tty"])
def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, terminal):
    folder = save_sharded(tiny_model("gpt2", preset="stream"), tmp_path / "m")
    by_label = {"blocks": tiny_model("gpt2", preset="stream"),
                "blocks (streamed)": open_source(folder, offload=True, device="cpu", **SHAPE),
                "blocks (device map)": open_source(folder, device_map={"": "cpu"}, **SHAPE)}
    for label, source in by_label.items():
        err = _Terminal() if terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        list(iter_hidden_states(source, calibration_ids(3, 8), batch_size=2, progress=True))
        monkeypatch.undo()
        assert (f"{label}:" in err.getvalue()) == terminal, (label, err.getvalue())


# ----------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_sharded(tiny_model("llama", preset="stream"), tmp_path_factory.mktemp("m") / "m")


@pytest.mark.parametrize("kwargs, message", [
    (dict(offload=True, device_map="auto"), "drop one"),
    (dict(device_map="everywhere"), "device_map must be one of auto, balanced, sequential"),
    (dict(device_map=3), "device_map must be one of"),
    (dict(offload="sometimes"), "True, False or 'auto'"),
    (dict(max_memory={0: "1GiB"}), "add one"),
    (dict(device_map={"": "cpu"}, max_memory={"cpu": "1GiB"}), "named device_map"),
    (dict(device_map="auto", device="cpu"), "drop device"),
    (dict(device_map="auto", max_memory="cpu:1GiB"), "not device=size"),
])
def test_contradictory_options_are_refused(folder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        open_source(folder, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(offload=True), dict(device_map="auto")], ids=["offload", "device_map"])
def test_offload_and_device_map_need_a_local_folder(kwargs):
    with pytest.raises(ValueError, match="not a loaded model"):
        open_source(tiny_model("llama", preset="stream"), **kwargs)
    with pytest.raises(ValueError, match="needs a local checkpoint folder.*download it first"):
        open_source("someone/some-model", **kwargs)


def test_other_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="loaded causal LM, a local folder or a hub id"):
        open_source(42)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- parse_max_memory
def test_parse_max_memory():
    assert parse_max_memory("0=20GiB,cpu=60GiB") == {0: "20GiB", "cpu": "60GiB"}
    assert parse_max_memory(" 0 = 1.5GB , cuda:1=500MiB, disk=100GB, CPU=1000000 ") == {
        0: "1.5GB", 1: "500MiB", "disk": "100GB", "cpu": 1000000}


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("0:20GiB", "not device=size"),
    ("0=20GiB,", "not device=size"),
    ("gpu0=20GiB", "not a GPU index"),
    ("0=20", None),
    ("0=20Gb", "unit GiB"),
    ("0=lots", "unit GiB"),
    ("0=1TB", "unit GiB"),
    ("0=1GiB,cuda:0=2GiB", "twice"),
])
def test_parse_max_memory_refuses_bad_text(text, message):
    if message is None:
        assert parse_max_memory(text) == {0: 20}  # a bare number is a byte count
        return
    with pytest.raises(ValueError, match=message):
        parse_max_memory(text)
