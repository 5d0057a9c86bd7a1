"""Removing blocks, saving and reloading gives the original model with those blocks as the identity.

For every supported family: a tiny random model (fp32, eager attention, windows shorter
than the sequences so sliding layers matter) loses some blocks; the in-memory result and
its reload through ``AutoModelForCausalLM.from_pretrained`` must (a) give the logits of the
original with the removed blocks replaced by the identity, (b) generate the same greedy
tokens with and without the KV cache (a stale ``layer_idx`` breaks this), (c) number blocks
and config ``0..k-1``, keeping each kept block's per-layer config entries.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers as tf
from tiny_models import (ALL_FAMILIES, VOCAB, blocks_as_identity, greedy, one_thread,  # noqa: F401
                         tiny_config, tiny_model)

from miprun.models.families import FAMILIES, supported_families
from miprun.output.save import save_pruned
from miprun.output.surgery import LAYER_INDEX_ATTRS, remove_blocks
from miprun.models.blocks import find_blocks

# Removal sets vary: middle blocks, the last block, the first block, and a run of two.
CASES = {
    "llama": [1, 3],
    "mistral": [4, 5],
    "mixtral": [1, 3],
    "qwen2": [1, 3],
    "qwen3": [0, 5],
    "gemma": [2, 3],
    "gemma2": [1, 3],
    "gemma3_text": [1, 5],
    "phi3": [1, 3],
    "gpt2": [1, 3],
    "opt": [1, 4],
    "gpt_neox": [1, 3],
}
TOL = 1e-5
NEW_TOKENS = 4


def test_every_supported_family_is_tested():
    assert set(CASES) == set(supported_families()) == set(ALL_FAMILIES)


def _index_values(block) -> set[int]:
    return {getattr(m, a) for m in block.modules() for a in LAYER_INDEX_ATTRS
            if isinstance(getattr(m, a, None), int)}


def _check_model(model, ids, reference, k):
    """Block count, block indices and logits of a pruned model; returns its greedy tokens (KV cache)."""
    blocks, _ = find_blocks(model)
    assert len(blocks) == k
    assert model.config.num_hidden_layers == k
    for j, block in enumerate(blocks):
        assert _index_values(block) == {j}, f"block {j} stores indices {_index_values(block)}"
    with torch.no_grad():
        logits = model(ids).logits
    torch.testing.assert_close(logits, reference, atol=TOL, rtol=0)
    return greedy(model, ids[:, :8], NEW_TOKENS, use_cache=True)


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_remove_save_reload_matches_identity_reference(model_type, tmp_path):
    tf.logging.set_verbosity_error()
    config = tiny_config(model_type)
    model = tiny_model(config=config)
    removed = CASES[model_type]
    blocks, path = find_blocks(model)
    T = len(blocks)
    kept = [i for i in range(T) if i not in removed]
    assert path == FAMILIES[model_type].block_path
    old_types = list(getattr(model.config, "layer_types", None) or [])
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = model(ids).logits
        with blocks_as_identity(blocks, removed):
            reference = model(ids).logits
    # The blocks matter far above the tolerance, so a wrong block or mask would show.
    assert (full - reference).abs().max() > 1e-2
    original_state = {k: v.clone() for k, v in model.state_dict().items()}

    pruned = remove_blocks(copy.deepcopy(model), removed)
    in_memory_tokens = _check_model(pruned, ids, reference, len(kept))

    out = save_pruned(pruned, None, tmp_path / "out", report={"pruned_blocks": removed})
    saved = json.loads((out / "config.json").read_text())
    count_key = "n_layer" if model_type == "gpt2" else "num_hidden_layers"
    assert saved[count_key] == len(kept)
    if old_types:
        assert saved["layer_types"] == [old_types[i] for i in kept]
    reloaded = tf.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    assert type(reloaded) is type(model)
    cached_tokens = _check_model(reloaded, ids, reference, len(kept))
    # Both models compute the same function (logits above), so one run without the cache
    # is the reference for both cached runs.
    uncached_tokens = greedy(reloaded, ids[:, :8], NEW_TOKENS, use_cache=False)
    assert torch.equal(in_memory_tokens, uncached_tokens)
    assert torch.equal(cached_tokens, uncached_tokens)

    # The kept blocks' weights are the original ones, under their new indices.
    prefix = path + "."
    state = reloaded.state_dict()
    for new, old in enumerate(kept):
        for key, value in original_state.items():
            if key.startswith(f"{prefix}{old}."):
                new_key = f"{prefix}{new}." + key[len(f"{prefix}{old}."):]
                assert torch.equal(state[new_key], value), new_key


def test_sliding_layers_really_differ_from_full():
    """Guard for the test above: with a wrong layer_types list the logits would change."""
    config = tiny_config("gemma3_text")
    model = tiny_model(config=config)
    ids = torch.randint(3, VOCAB, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model(ids).logits
        # The model reads config.layer_types at every forward to pick each block's mask.
        model.config.layer_types = ["full_attention"] * len(model.config.layer_types)
        b = model(ids).logits
    assert (a - b).abs().max() > 1e-2


def test_qwen2_max_window_layers_follows_kept_blocks():
    model = tiny_model("qwen2")  # blocks 0, 1 full attention; 2..5 sliding
    remove_blocks(model, [0, 3])
    assert model.config.max_window_layers == 1
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention",
                                        "sliding_attention"]


def test_gpt2_inverse_layer_scaling_is_kept_after_renumbering(tmp_path):
    tf.logging.set_verbosity_error()
    config = tiny_config("gpt2")
    config.scale_attn_by_inverse_layer_idx = True
    model = tiny_model(config=config)
    blocks, _ = find_blocks(model)
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), blocks_as_identity(blocks, [0, 2]):
        reference = model(ids).logits
    pruned = remove_blocks(copy.deepcopy(model), [0, 2])
    cached = _check_model(pruned, ids, reference, 3)
    reloaded = tf.AutoModelForCausalLM.from_pretrained(save_pruned(pruned, None, tmp_path / "g"),
                                                       attn_implementation="eager")
    assert torch.equal(_check_model(reloaded, ids, reference, 3), cached)
    assert torch.equal(greedy(reloaded, ids[:, :8], NEW_TOKENS, use_cache=False), cached)
