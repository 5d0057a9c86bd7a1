"""Every command refuses a broken checkpoint in every placement: exit 2, one line naming the problem, nothing written.

By class, not by instance: a safetensors file cut at each kind of offset or lengthened; a
config.json that disagrees with the weights in each direction (blocks, MLP width, heads,
key/value heads, hidden size, vocabulary); a tensor dropped, added or reshaped; a sharded
checkpoint whose index disagrees with its shards; a GGUF file cut short. Each runs through
``prune``, ``score``, ``eval`` and ``compare``, with the model in memory, streamed
(``--offload``) and placed by a device map, and must leave the model and the folder
around it as they were.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from checkpoint_damage import (COMMANDS, append_bytes, assert_refused, command_argv, digest, edit_config, listing,
                               rewrite_tensors, run_command, save_tiny, truncate, truncation_offsets,
                               write_calibration)
from support import STORIES, requires_native, requires_stories

pytestmark = [requires_native]  # prune and compare select blocks in the native core

COMMAND_IDS = [f"{c}-{p.replace(' ', '-')}" for c, p in COMMANDS]


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """The tiny Llama saved as one file and as shards with an index, and a calibration text."""
    root = tmp_path_factory.mktemp("broken")
    save_tiny(root / "single", sharded=False)
    save_tiny(root / "sharded", sharded=True)
    write_calibration(root / "calib.txt")
    return root


def _refused_everywhere_alike(source: Path, calib_template: Path, tmp_path: Path, damage, command: str,
                              placement: str, *phrases: str) -> str:
    """Damage a copy of ``source``, run the command on it, and check the refusal; returns the error line."""
    model = tmp_path / "model"
    shutil.copytree(source, model)
    calib = Path(shutil.copy(calib_template, tmp_path / "calib.txt"))
    damage(model)
    before, names = digest(model), listing(tmp_path)
    out = tmp_path / ("out.json" if command in ("score", "eval") else "out")
    code, _, err = run_command(command_argv(command, placement, model, calib, out))
    line = assert_refused(code, err, *phrases)
    assert not out.exists() and listing(tmp_path) == names, "something was written"
    assert digest(model) == before, "the input model changed"
    return line


# --- a file cut short or lengthened ---

TRUNCATIONS = ["empty", "inside the length", "inside the header", "after the header", "inside the data", "last byte"]


@pytest.mark.parametrize("where", TRUNCATIONS)
@pytest.mark.parametrize("command,placement", COMMANDS, ids=COMMAND_IDS)
def test_a_truncated_file_is_refused(templates, tmp_path, where, command, placement):
    def damage(model):
        weights = model / "model.safetensors"
        truncate(weights, truncation_offsets(weights)[where])

    line = _refused_everywhere_alike(templates / "single", templates / "calib.txt", tmp_path, damage, command,
                                     placement, "model.safetensors is truncated", "re-download")
    if where in ("after the header", "inside the data", "last byte"):
        assert "its header promises" in line


@pytest.mark.parametrize("command,placement", COMMANDS, ids=COMMAND_IDS)
def test_a_file_longer_than_its_header_is_refused(templates, tmp_path, command, placement):
    _refused_everywhere_alike(templates / "single", templates / "calib.txt", tmp_path,
                              lambda m: append_bytes(m / "model.safetensors", 16), command, placement,
                              "model.safetensors is longer than its header says")


# --- config.json against the weights (4 blocks, hidden 32, 2 heads and 2 key/value heads of 16, MLP 64) ---

MISMATCHES = {
    "more blocks": ({"num_hidden_layers": 5},
                    "config.json says 5 blocks but the weights hold 4 (model.layers.4.* missing)"),
    "fewer blocks": ({"num_hidden_layers": 3},
                     "config.json says 3 blocks but the weights hold 4 (model.layers.3.* not read)"),
    "wider MLP": ({"intermediate_size": 128},
                  "mlp.down_proj.weight is (32, 64) in the weights, (32, 128) by config.json"),
    "narrower MLP": ({"intermediate_size": 48},
                     "mlp.down_proj.weight is (32, 64) in the weights, (32, 48) by config.json"),
    "more heads": ({"num_attention_heads": 4},
                   "self_attn.o_proj.weight is (32, 32) in the weights, (32, 64) by config.json"),
    "fewer heads": ({"num_attention_heads": 1, "num_key_value_heads": 1},
                    "self_attn.k_proj.weight is (32, 32) in the weights, (16, 32) by config.json"),
    "more key/value heads": ({"num_key_value_heads": 4},
                             "self_attn.k_proj.weight is (32, 32) in the weights, (64, 32) by config.json"),
    "fewer key/value heads": ({"num_key_value_heads": 1},
                              "self_attn.k_proj.weight is (32, 32) in the weights, (16, 32) by config.json"),
    "wider hidden size": ({"hidden_size": 64}, "model.embed_tokens.weight is (31, 32) in the weights, (31, 64) by"),
    "narrower hidden size": ({"hidden_size": 16}, "model.embed_tokens.weight is (31, 32) in the weights, (31, 16) by"),
    "larger vocabulary": ({"vocab_size": 40}, "lm_head.weight is (31, 32) in the weights, (40, 32) by config.json"),
}


@pytest.mark.parametrize("mismatch", list(MISMATCHES))
@pytest.mark.parametrize("command,placement", COMMANDS, ids=COMMAND_IDS)
def test_a_config_that_disagrees_with_the_weights_is_refused(templates, tmp_path, mismatch, command, placement):
    changes, phrase = MISMATCHES[mismatch]
    _refused_everywhere_alike(templates / "single", templates / "calib.txt", tmp_path,
                              lambda m: edit_config(m, **changes), command, placement,
                              "do not match the LlamaForCausalLM its config.json describes", phrase)


TENSOR_EDITS = {
    "a tensor dropped": (dict(drop="lm_head.weight"), "missing tensors (1: lm_head.weight)"),
    "a tensor added": (dict(add=("model.layers.1.mlp.extra.weight", (4, 4))),
                       "unexpected tensors (1: model.layers.1.mlp.extra.weight)"),
    "a block added": (dict(add=("model.layers.4.input_layernorm.weight", (32,))),
                      "config.json says 4 blocks but the weights hold 5"),
    "a tensor reshaped": (dict(reshape=("model.layers.2.mlp.up_proj.weight", (65, 32))),
                          "model.layers.2.mlp.up_proj.weight is (65, 32) in the weights, (64, 32) by config.json"),
}


@pytest.mark.parametrize("edit", list(TENSOR_EDITS))
@pytest.mark.parametrize("command,placement", COMMANDS, ids=COMMAND_IDS)
def test_weights_rewritten_without_their_config_are_refused(templates, tmp_path, edit, command, placement):
    kwargs, phrase = TENSOR_EDITS[edit]
    _refused_everywhere_alike(templates / "single", templates / "calib.txt", tmp_path,
                              lambda m: rewrite_tensors(m / "model.safetensors", **kwargs), command, placement, phrase)


# --- a sharded checkpoint whose index disagrees with its shards ---

def _shards(model: Path) -> list[Path]:
    return sorted(model.glob("model-*.safetensors"))


def _edit_index(model: Path, edit) -> None:
    import json
    path = model / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    edit(index["weight_map"])
    path.write_text(json.dumps(index))


SHARD_DAMAGES = {
    "a shard missing": (lambda m: _shards(m)[1].unlink(), "its index names 1 shard file(s) that are absent"),
    "a shard truncated": (lambda m: truncate(_shards(m)[2], _shards(m)[2].stat().st_size - 1), "is truncated"),
    "the index names a tensor its shard lacks": (
        lambda m: _edit_index(m, lambda w: w.update({"model.layers.1.mlp.extra.weight": _shards(m)[0].name})),
        "named by model.safetensors.index.json are not in their shard's header"),
    "the index leaves a tensor out": (
        lambda m: _edit_index(m, lambda w: w.pop("model.layers.2.mlp.up_proj.weight")),
        "model.safetensors.index.json does not list"),
    "the index is not JSON": (lambda m: (m / "model.safetensors.index.json").write_text("{not json"),
                              "model.safetensors.index.json is not valid JSON"),
    "more blocks than the shards hold": (lambda m: edit_config(m, num_hidden_layers=5),
                                         "config.json says 5 blocks but the weights hold 4"),
}


@pytest.mark.parametrize("damage", list(SHARD_DAMAGES))
@pytest.mark.parametrize("command,placement", COMMANDS, ids=COMMAND_IDS)
def test_a_damaged_sharded_checkpoint_is_refused(templates, tmp_path, damage, command, placement):
    apply, phrase = SHARD_DAMAGES[damage]
    _refused_everywhere_alike(templates / "sharded", templates / "calib.txt", tmp_path, apply, command, placement,
                              phrase)


# --- the real stories260K ---

STORIES_DAMAGES = {
    "one byte short": (lambda m: truncate(m / "model.safetensors", m.joinpath("model.safetensors").stat().st_size - 1),
                       "model.safetensors is truncated: its header promises 1,044,984 bytes, the file has 1,044,983"),
    "a sixth block promised": (lambda m: edit_config(m, num_hidden_layers=6),
                               "config.json says 6 blocks but the weights hold 5 (model.layers.5.* missing)"),
    "a wider MLP promised": (lambda m: edit_config(m, intermediate_size=256),
                             "mlp.down_proj.weight is (64, 172) in the weights, (64, 256) by config.json"),
    "the tied head untied": (lambda m: edit_config(m, tie_word_embeddings=False),
                             "missing tensors (1: lm_head.weight)"),
}


@requires_stories
@pytest.mark.parametrize("damage", list(STORIES_DAMAGES))
@pytest.mark.parametrize("command,placement", COMMANDS, ids=COMMAND_IDS)
def test_damaged_copies_of_stories260k_are_refused(tmp_path, damage, command, placement):
    calib = tmp_path / "calib.txt"
    write_calibration(calib)
    work = tmp_path / "work"
    work.mkdir()
    apply, phrase = STORIES_DAMAGES[damage]

    def damage_copy(model):
        model.chmod(0o755)
        for p in model.iterdir():
            p.chmod(0o644)  # the shared copy is read-only
        apply(model)

    _refused_everywhere_alike(STORIES, calib, work, damage_copy, command, placement, phrase)


# --- good checkpoints still pass (the check refuses damage, not checkpoints) ---

@pytest.mark.parametrize("layout", ["single", "sharded"])
@pytest.mark.parametrize("command,placement", [c for c in COMMANDS if c[0] != "compare"],
                         ids=[i for i in COMMAND_IDS if not i.startswith("compare")])
def test_an_intact_checkpoint_runs(templates, tmp_path, layout, command, placement):
    model = tmp_path / "model"
    shutil.copytree(templates / layout, model)
    out = tmp_path / ("out.json" if command in ("score", "eval") else "out")
    code, _, err = run_command(command_argv(command, placement, model, templates / "calib.txt", out))
    assert code == 0, err
    assert out.exists()
