"""Model loading refuses weights that do not fit, damaged files and mistyped paths, with clear errors."""

from __future__ import annotations

import json
import os
import time

import pytest
from support import requires_stories
from support import stories_copy as copy_stories

from miprun.models import loading
from miprun.models.loading import load_config, load_model, load_tokenizer, local_dir


@pytest.fixture
def stories_copy(tmp_path):
    return copy_stories(tmp_path / "stories")


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@requires_stories
def test_the_intact_model_loads_with_its_tied_head(stories_copy):
    model = load_model(stories_copy)
    assert model.lm_head.weight is model.model.embed_tokens.weight


@requires_stories
def test_a_config_with_more_layers_than_the_weights_is_refused(stories_copy):
    _edit_config(stories_copy, num_hidden_layers=6)
    with pytest.raises(ValueError, match=r"missing tensors \(9: model\.layers\.5\.") as err:
        load_model(stories_copy)
    assert "config.json" in str(err.value) and "re-download" in str(err.value)


@requires_stories
def test_a_config_naming_another_architecture_is_refused(stories_copy):
    _edit_config(stories_copy, model_type="bert", architectures=["BertLMHeadModel"])
    with pytest.raises(ValueError, match=r"missing tensors \(\d+: bert\..*unexpected tensors \(47: model\."):
        load_model(stories_copy)


@requires_stories
def test_weights_of_the_wrong_shape_are_refused(stories_copy):
    _edit_config(stories_copy, intermediate_size=160)
    with pytest.raises(ValueError, match=r"wrong shape .*mlp"):
        load_model(stories_copy)


@requires_stories
def test_a_truncated_safetensors_file_is_named(stories_copy):
    weights = stories_copy / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    with pytest.raises(ValueError, match=rf"model\.safetensors is truncated: its header promises {size:,} bytes, "
                                         rf"the file has {size // 2:,}; re-download or re-save it"):
        load_model(stories_copy)


def test_a_mistyped_relative_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in ("models/doesnotexist", "./doesnotexist", "../nowhere/model", "~/no-such-model-here",
                 "model.safetensors", "a/b/c"):
        start = time.monotonic()
        with pytest.raises(FileNotFoundError, match=f"local path {name} does not exist"):
            local_dir(name)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_tokenizer(name)
        assert time.monotonic() - start < 1
    assert local_dir("Qwen/Qwen2.5-0.5B") is None and local_dir("gpt2") is None


def test_an_unreachable_hub_fails_fast_and_says_so(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    loading.hub_unreachable.cache_clear()
    monkeypatch.setattr(loading, "hub_unreachable", lambda: "https://huggingface.co cannot be reached: no network")
    for load in (load_config, load_model, load_tokenizer):
        start = time.monotonic()
        with pytest.raises(FileNotFoundError, match=r"someone/some-model .*Hugging Face Hub .*HF_HUB_OFFLINE"):
            load("someone/some-model")
        assert time.monotonic() - start < 10


def test_the_hub_probe_is_quick_without_a_network(monkeypatch):
    """On a machine without network (as in CI here) the real probe answers within its timeout."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    loading.hub_unreachable.cache_clear()
    start = time.monotonic()
    try:
        reachable = loading.hub_unreachable() is None
    finally:
        loading.hub_unreachable.cache_clear()
    assert time.monotonic() - start < loading.HUB_PROBE_TIMEOUT + 2
    if reachable:
        pytest.skip("the Hub is reachable from here")
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"Hugging Face Hub .*cannot be reached.*HF_HUB_OFFLINE"):
        load_config("someone/some-model")
    assert time.monotonic() - start < 10
    loading.hub_unreachable.cache_clear()
