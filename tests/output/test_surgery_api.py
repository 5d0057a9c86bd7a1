"""find_blocks, block_prefix, prune_config and the errors of remove_blocks."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from tiny_models import ALL_FAMILIES, one_thread, tiny_config, tiny_model  # noqa: F401
from torch import nn

from miprun.models.families import FAMILIES, supported_families
from miprun.models.blocks import block_prefix, find_blocks
from miprun.output.surgery import per_layer_fields, prune_config, remove_blocks


def _unsupported_model():
    config = tf.BloomConfig(vocab_size=64, hidden_size=32, n_layer=3, n_head=2)
    return tf.AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("model_type", ALL_FAMILIES)
def test_block_prefix_of_config_matches_the_model_state_dict(model_type):
    config = tiny_config(model_type)
    model = tiny_model(config=config)
    prefix = block_prefix(config)
    assert prefix == block_prefix(model) == FAMILIES[model_type].block_path + "."
    n = config.num_hidden_layers
    keys = model.state_dict().keys()
    for i in range(n):
        assert any(k.startswith(f"{prefix}{i}.") for k in keys)
    assert not any(k.startswith(f"{prefix}{n}.") for k in keys)


def test_find_blocks_on_base_models():
    model = tiny_model("llama")
    blocks, path = find_blocks(model.model)
    assert path == "layers" and blocks is model.model.layers
    gpt2 = tiny_model("gpt2")
    assert find_blocks(gpt2.transformer) == (gpt2.transformer.h, "h")


def test_find_blocks_prefers_the_list_with_the_configured_length():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = tf.LlamaConfig(num_hidden_layers=3)
            self.model = nn.Module()
            self.model.layers = nn.ModuleList([nn.Identity() for _ in range(2)])  # not the blocks
            self.transformer = nn.Module()
            self.transformer.h = nn.ModuleList([nn.Identity() for _ in range(3)])

    w = Wrapper()
    assert find_blocks(w) == (w.transformer.h, "transformer.h")


def test_find_blocks_failure_names_class_and_paths():
    class NoBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(2, 2)

    with pytest.raises(ValueError, match=r"NoBlocks.*model\.layers.*transformer\.h.*gpt_neox\.layers"):
        find_blocks(NoBlocks())


def test_unsupported_architecture_is_refused_everywhere():
    model = _unsupported_model()
    before = len(find_blocks(model)[0])  # finding blocks is generic: scoring may use it
    for call, name in ((lambda: remove_blocks(model, [1]), "BloomForCausalLM"),
                       (lambda: prune_config(model.config, [0, 1]), "BloomConfig"),
                       (lambda: block_prefix(model.config), "BloomConfig")):
        with pytest.raises(ValueError, match=f"architecture {name} .*'bloom'.*not supported.*llama.*gpt_neox") as err:
            call()
        for family in supported_families():
            assert family in str(err.value)
    assert len(find_blocks(model)[0]) == before and model.config.n_layer == 3


@pytest.mark.parametrize("blocks, message", [
    ([6], r"blocks \[6\] are outside 0\.\.5: the model has 6 blocks"),
    ([-1], r"blocks \[-1\] are outside 0\.\.5"),
    ([1, 3, 1], r"duplicates \[1\]"),
    (list(range(6)), r"cannot remove 6 of 6 blocks: at least one block must stay"),
    ([1.0], r"integer block indices, got 1\.0"),
    ([True], r"integer block indices, got True"),
])
def test_bad_indices_are_refused_and_the_model_is_untouched(blocks, message):
    model = tiny_model("gemma3_text")
    types = list(model.config.layer_types)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        remove_blocks(model, blocks)
    assert len(model.model.layers) == 6 and model.config.num_hidden_layers == 6
    assert model.config.layer_types == types
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(6))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())


def test_numpy_indices_and_empty_removal():
    np = pytest.importorskip("numpy")
    model = tiny_model("llama")
    assert remove_blocks(model, []) is model and len(model.model.layers) == 6
    remove_blocks(model, np.array([0, 5]))
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]


def test_model_config_mismatch_is_refused():
    model = tiny_model("llama")
    del model.model.layers[5]
    with pytest.raises(ValueError, match="has 5 blocks at model.layers but its config says num_hidden_layers=6"):
        remove_blocks(model, [0])


def test_prune_config_filters_every_per_layer_list_and_nothing_else():
    config = tiny_config("qwen3")  # 6 blocks, layer_types full/sliding alternating
    config.per_block_width = [10, 11, 12, 13, 14, 15]  # an unknown per-layer list: filtered too
    config.eos_token_id = [2, 3, 4, 5, 6, 7]  # token ids are never per-layer
    config.other_list = [1, 2, 3]  # a list of another length is left alone
    assert set(per_layer_fields(config)) == {"layer_types", "per_block_width"}
    prune_config(config, [0, 3, 4])
    assert config.num_hidden_layers == 3
    assert config.layer_types == ["full_attention", "sliding_attention", "full_attention"]
    assert config.per_block_width == [10, 13, 14]
    assert config.eos_token_id == [2, 3, 4, 5, 6, 7]
    assert config.other_list == [1, 2, 3]


def test_prune_config_on_an_autoconfig_and_gpt2_alias(tmp_path):
    tiny_config("gemma3_text").save_pretrained(tmp_path / "g3")
    config = tf.AutoConfig.from_pretrained(tmp_path / "g3")
    types = list(config.layer_types)
    prune_config(config, [5, 0, 2])  # order does not matter: blocks keep their order
    assert config.layer_types == [types[0], types[2], types[5]]
    config.save_pretrained(tmp_path / "g3p")
    reread = json.loads((tmp_path / "g3p" / "config.json").read_text())
    assert reread["num_hidden_layers"] == 3 and reread["layer_types"] == config.layer_types

    gpt2 = tiny_config("gpt2")
    prune_config(gpt2, [0, 4])
    assert gpt2.n_layer == 2 and gpt2.to_dict()["n_layer"] == 2


@pytest.mark.parametrize("kept, message", [
    ([], "kept_blocks is empty"),
    ([0, 0], "duplicates"),
    ([6], r"kept_blocks \[6\] are outside 0\.\.5"),
])
def test_prune_config_bad_kept_blocks(kept, message):
    config = tiny_config("llama")
    with pytest.raises(ValueError, match=message):
        prune_config(config, kept)
    assert config.num_hidden_layers == 6


def test_prune_config_moves_per_layer_overrides():
    config = tf.LlamaConfig(num_hidden_layers=5, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                            per_layer_config={1: {"intermediate_size": 48}, 3: {"intermediate_size": 40}})
    prune_config(config, [0, 3, 4])  # block 1 goes, block 3 becomes block 1
    assert config.num_hidden_layers == 3
    assert config.per_layer_config[1].intermediate_size == 40
    assert config.per_layer_config[0].intermediate_size == 64
    assert config.to_dict()["per_layer_config"] == {"1": {"intermediate_size": 40}}


def test_device_map_is_renumbered():
    model = tiny_model("llama")
    model.hf_device_map = {"model.embed_tokens": "cpu", **{f"model.layers.{i}": "cpu" for i in range(6)},
                           "model.layers.1.mlp": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    remove_blocks(model, [1, 2])
    assert model.hf_device_map == {"model.embed_tokens": "cpu", **{f"model.layers.{i}": "cpu" for i in range(4)},
                                   "model.norm": "cpu", "lm_head": "cpu"}
