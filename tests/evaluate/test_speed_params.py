"""Parameter counts (total and per token) and the speed measurement."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from tiny_models import tiny_model

from miprun.evaluate.summary import count_parameters, measure_speed, prefill_and_decode

# Counted by hand from the configs below, not with the implementation's method (distinct
# tensors of model.parameters()), so that a shared mistake cannot make both agree.
# The "eval" Llama: hidden 32, intermediate 64, 2 query and 2 key/value heads of 16, no biases.
H, I = 32, 64
LLAMA_BLOCK = 4 * H * H + 3 * H * I + 2 * H  # q, k, v, o; gate, up, down; two RMSNorm weights = 10304


def llama_total(vocab: int, blocks: int, tied: bool) -> int:
    """Token table, blocks, final norm and, when not tied, the output head."""
    return vocab * H + blocks * LLAMA_BLOCK + H + (0 if tied else vocab * H)


def test_hand_counts_are_what_transformers_counts():
    assert llama_total(64, 4, tied=False) == 45344 and llama_total(64, 4, tied=True) == 43296
    for tie in (False, True):
        model = tiny_model("llama", preset="eval", vocab=64, tie=tie)
        assert model.num_parameters() == llama_total(64, 4, tied=tie)
        assert sum(p.numel() for p in model.model.layers[0].parameters()) == LLAMA_BLOCK


def test_untied_embedding_counts_one_row_per_token():
    model = tiny_model("llama", preset="eval", vocab=64, tie=False)
    c = count_parameters(model)
    assert c.total == 45344  # llama_total(64, 4, tied=False)
    assert c.embedding_rows_unused == 64 * 32 - 32  # the token table less the one row a token reads
    assert c.per_token == 45344 - (64 - 1) * 32 == 43328


def test_tied_embedding_is_used_in_full_by_the_head():
    model = tiny_model("llama", preset="eval", vocab=64, tie=True)
    c = count_parameters(model)
    assert c.total == 43296  # llama_total(64, 4, tied=True): the shared table counted once
    assert c.per_token == c.total and c.embedding_rows_unused == 0


def test_gpt2_position_table_counts_one_row():
    cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=40, vocab_size=50)
    model = tf.GPT2LMHeadModel(cfg)
    c = count_parameters(model)
    # Per block: ln_1, ln_2 (weight and bias) 2 * 64; c_attn 32x96 + 96; attn c_proj 32x32 + 32;
    # c_fc 32x128 + 128; mlp c_proj 128x32 + 32: 12704. Token table 50x32 (tied to the head),
    # position table 40x32, ln_f 64.
    block = 2 * 64 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32)
    assert block == 12704
    total = 50 * 32 + 40 * 32 + 2 * block + 64
    assert c.total == total == 28352 == model.num_parameters()
    assert c.embedding_rows_unused == (40 - 1) * 32  # token table tied to the head, position table looked up
    assert c.per_token == total - (40 - 1) * 32


def test_removing_blocks_lowers_both_counts():
    from miprun.output.surgery import remove_blocks
    model = tiny_model("llama", preset="eval", num_blocks=4)
    before = count_parameters(model)
    after = count_parameters(remove_blocks(model, [1, 2]))
    assert before.total - after.total == 2 * LLAMA_BLOCK
    assert before.per_token - after.per_token == 2 * LLAMA_BLOCK
    assert after.total == llama_total(64, 2, tied=False)


def test_speed_fields_and_consistency():
    model = tiny_model("llama", preset="eval")
    s = measure_speed(model, batch=2, length=16, decode_tokens=4, warmup=1, repeats=3)
    assert s.batch == 2 and s.length == 16 and s.decode_tokens == 4 and s.repeats == 3
    assert s.prefill_tokens_per_s == pytest.approx(2 * 16 / s.prefill_s)
    assert s.decode_tokens_per_s == pytest.approx(2 * 4 / s.decode_s)
    assert s.prefill_s > 0 and s.decode_s > 0 and s.device == "cpu" and s.dtype == "float32"
    assert not model.training


def test_timed_loop_decodes_what_generate_decodes():
    # The timed run's greedy tokens (prefill, then cached one-token steps) equal generate()'s
    # without a cache: the loop really decodes, with positions and cache right.
    model = tiny_model("llama", preset="eval", seed=5)
    prompt = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    pre, dec, tokens = prefill_and_decode(model, prompt, decode_tokens=5)
    with torch.inference_mode():
        want = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False,
                              attention_mask=torch.ones_like(prompt), pad_token_id=0)[:, 8:]
    assert tokens.shape == (2, 6) and torch.equal(tokens, want)
    assert pre > 0 and dec > 0


def test_speed_rejects_bad_settings():
    model = tiny_model("llama", preset="eval", max_positions=32)
    with pytest.raises(ValueError, match="exceeds the model's maximum length 32"):
        measure_speed(model, length=30, decode_tokens=8)
    with pytest.raises(ValueError, match="repeats=0"):
        measure_speed(model, length=8, decode_tokens=2, repeats=0)
