"""Parameter counts (total and per token) and the speed measurement."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from eval_tiny import tiny_llama

from miprun.evaluate.summary import count_parameters, measure_speed, prefill_and_decode


def _numel(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_untied_embedding_counts_one_row_per_token():
    model = tiny_llama(vocab=64, tie=False)
    c = count_parameters(model)
    assert c.total == _numel(model)
    assert c.embedding_rows_unused == 64 * 32 - 32
    assert c.per_token == c.total - (64 - 1) * 32


def test_tied_embedding_is_used_in_full_by_the_head():
    model = tiny_llama(vocab=64, tie=True)
    c = count_parameters(model)
    assert c.total == _numel(model) and c.total == count_parameters(tiny_llama(vocab=64)).total - 64 * 32
    assert c.per_token == c.total and c.embedding_rows_unused == 0


def test_gpt2_position_table_counts_one_row():
    cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=40, vocab_size=50)
    model = tf.GPT2LMHeadModel(cfg)
    c = count_parameters(model)
    assert c.total == _numel(model)
    assert c.embedding_rows_unused == (40 - 1) * 32  # token table tied to the head, position table looked up


def test_removing_blocks_lowers_both_counts():
    from miprun.output.surgery import remove_blocks
    model = tiny_llama(layers=4)
    before = count_parameters(model)
    block = sum(p.numel() for p in model.model.layers[0].parameters())
    after = count_parameters(remove_blocks(model, [1, 2]))
    assert before.total - after.total == 2 * block
    assert before.per_token - after.per_token == 2 * block


def test_speed_fields_and_consistency():
    model = tiny_llama()
    s = measure_speed(model, batch=2, length=16, decode_tokens=4, warmup=1, repeats=3)
    assert s.batch == 2 and s.length == 16 and s.decode_tokens == 4 and s.repeats == 3
    assert s.prefill_tokens_per_s == pytest.approx(2 * 16 / s.prefill_s)
    assert s.decode_tokens_per_s == pytest.approx(2 * 4 / s.decode_s)
    assert s.prefill_s > 0 and s.decode_s > 0 and s.device == "cpu" and s.dtype == "float32"
    assert not model.training


def test_timed_loop_decodes_what_generate_decodes():
    # The timed run's greedy tokens (prefill, then cached one-token steps) equal generate()'s
    # without a cache: the loop really decodes, with positions and cache right.
    model = tiny_llama(seed=5)
    prompt = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    pre, dec, tokens = prefill_and_decode(model, prompt, decode_tokens=5)
    with torch.inference_mode():
        want = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False,
                              attention_mask=torch.ones_like(prompt), pad_token_id=0)[:, 8:]
    assert tokens.shape == (2, 6) and torch.equal(tokens, want)
    assert pre > 0 and dec > 0


def test_speed_rejects_bad_settings():
    model = tiny_llama(max_positions=32)
    with pytest.raises(ValueError, match="exceeds the model's maximum length 32"):
        measure_speed(model, length=30, decode_tokens=8)
    with pytest.raises(ValueError, match="repeats=0"):
        measure_speed(model, length=8, decode_tokens=2, repeats=0)
