"""A pruned checkpoint's auto_map names code that is in the folder, or is dropped."""

from __future__ import annotations

import json

import pytest
from support import stories_copy as copy_stories

from miprun.models.loading import load_model
from miprun.output.remote_code import carry_remote_code
from miprun.output.save import save_pruned
from miprun.output.shards import write_pruned_checkpoint

AUTO_MAP = {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}


@pytest.fixture
def stories_with_auto_map(tmp_path):
    folder = copy_stories(tmp_path / "src")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = AUTO_MAP
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _with_code(folder):
    (folder / "configuration_tiny.py").write_text("from transformers import LlamaConfig as TinyConfig\n")
    (folder / "modeling_tiny.py").write_text("from .configuration_tiny import TinyConfig\nfrom .tiny_utils import x\n")
    (folder / "tiny_utils.py").write_text("x = 1\n")


def _auto_map(folder):
    return json.loads((folder / "config.json").read_text()).get("auto_map")


def test_shards_copy_the_code_auto_map_names(stories_with_auto_map, tmp_path):
    _with_code(stories_with_auto_map)
    out = write_pruned_checkpoint(stories_with_auto_map, [1], tmp_path / "out")
    assert _auto_map(out) == AUTO_MAP
    for name in ("configuration_tiny.py", "modeling_tiny.py", "tiny_utils.py"):  # utils: a relative import
        assert (out / name).read_text() == (stories_with_auto_map / name).read_text()


def test_shards_drop_auto_map_without_code_for_a_native_architecture(stories_with_auto_map, tmp_path):
    out = write_pruned_checkpoint(stories_with_auto_map, [1], tmp_path / "out")
    assert _auto_map(out) is None
    assert not list(out.glob("*.py"))
    assert load_model(out).config.num_hidden_layers == 4


def test_save_pruned_copies_or_drops_auto_map(stories_with_auto_map, tmp_path):
    model = load_model(stories_with_auto_map)
    out = save_pruned(model, None, tmp_path / "dropped", source_dir=stories_with_auto_map)
    assert _auto_map(out) is None
    _with_code(stories_with_auto_map)
    out = save_pruned(model, None, tmp_path / "copied", source_dir=stories_with_auto_map)
    assert _auto_map(out) == AUTO_MAP and (out / "modeling_tiny.py").exists()


def test_foreign_architectures_keep_their_entries_with_a_warning(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "tiny-custom", "auto_map": AUTO_MAP,
                                                      "architectures": ["TinyForCausalLM"]}))
    with pytest.warns(RuntimeWarning, match=r"names configuration_tiny\.py, modeling_tiny\.py, not found .*"
                                            r"copy them into"):
        carry_remote_code(tmp_path, None)
    assert _auto_map(tmp_path) == AUTO_MAP


def test_hub_references_are_kept(tmp_path):
    auto_map = {"AutoTokenizer": ["owner/repo--tokenization_x.XTokenizer", None]}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "auto_map": auto_map}))
    carry_remote_code(tmp_path, None)
    assert _auto_map(tmp_path) == auto_map
