"""Perplexity: the window protocol, agreement with a plain float64 transformers computation, inputs."""

from __future__ import annotations

import json

import pytest
import torch
from support import STORIES, data_file, requires_stories
from tiny_models import random_text, reference_perplexity, tiny_model, word_tokenizer

from miprun.evaluate.summary import perplexity, read_text, tokenize_text, window_spans

# float32 logits against the float64 reference: the relative error of a mean NLL of a few
# nats over hundreds of tokens is ~1e-6; the requirement is 0.1%.
RTOL = 1e-3


@pytest.mark.parametrize("n,seq_len,stride", [(100, 16, None), (100, 16, 5), (97, 10, 10), (64, 64, 1), (33, 8, 7)])
def test_spans_score_each_token_at_most_once(n, seq_len, stride):
    spans = window_spans(n, seq_len, stride)
    scored = [t for s in spans for t in range(s.first, s.end)]
    assert len(scored) == len(set(scored))
    assert all(s.begin < s.first <= s.end and s.end - s.begin <= seq_len for s in spans)
    if stride is None:
        assert len(spans) == n // seq_len and len(scored) == (n // seq_len) * (seq_len - 1)
    elif stride < seq_len:
        assert scored == list(range(1, n))  # every token after the first, once, in order
        assert all(s.first - s.begin >= seq_len - stride for s in spans[1:])  # context kept
    else:
        assert spans[-1].end == n and 0 not in scored


def test_spans_reject_bad_lengths():
    with pytest.raises(ValueError, match="fewer than one window"):
        window_spans(10, 16)
    with pytest.raises(ValueError, match="stride=17"):
        window_spans(100, 16, 17)
    with pytest.raises(ValueError, match="at least 2"):
        window_spans(100, 1)


@pytest.mark.parametrize("seq_len,stride,batch_size", [(32, None, 1), (32, None, 3), (32, 12, 2), (24, 24, 2)])
@pytest.mark.parametrize("tie", [False, True])
def test_matches_transformers_reference_on_random_model(seq_len, stride, batch_size, tie):
    model = tiny_model("llama", preset="eval", tie=tie, seed=seq_len + (stride or 0))
    ids = torch.randint(0, 64, (131,), generator=torch.Generator().manual_seed(7))
    got = perplexity(model, ids, seq_len=seq_len, stride=stride, batch_size=batch_size)
    want, count = reference_perplexity(model, ids, seq_len, stride)
    assert got.tokens_scored == count
    assert got.perplexity == pytest.approx(want, rel=RTOL)
    assert got.text_tokens == 131 and got.seq_len == seq_len and got.stride == stride
    # a random model is far from uniform with these weights, so the check has teeth
    assert abs(got.perplexity - 64) > 1


def test_text_is_tokenised_once_with_one_bos(tmp_path):
    tok = word_tokenizer()
    text = random_text(300, seed=1)
    path = tmp_path / "text.txt"
    path.write_text(text)
    model = tiny_model("llama", preset="eval", vocab=len(tok), seed=3)
    ids = tokenize_text(read_text(path), tok)
    assert ids[0] == tok.bos_token_id and int((ids == tok.bos_token_id).sum()) == 1 and ids.numel() == 301
    by_path = perplexity(model, path, tokenizer=tok, seq_len=40)
    by_ids = perplexity(model, ids, seq_len=40)
    assert by_path.perplexity == by_ids.perplexity and by_path.source == str(path)


def test_model_length_and_batch_checked():
    model = tiny_model("llama", preset="eval", max_positions=32)
    ids = torch.randint(0, 64, (100,), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="exceeds the model's maximum length 32"):
        perplexity(model, ids, seq_len=64)
    with pytest.raises(ValueError, match="batch_size=0"):
        perplexity(model, ids, seq_len=16, batch_size=0)
    with pytest.raises(ValueError, match="no tokenizer"):
        perplexity(model, "some words", seq_len=16)


def test_read_text_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "one two"}) + "\n\n" + json.dumps({"text": "three"}) + "\n")
    assert read_text(tmp_path / "a.jsonl") == "one two\n\nthree"
    alpaca = [{"instruction": "Do it.", "input": "", "output": "Done."}, {"instruction": "Add", "input": "1+1",
                                                                        "output": "2"}]
    (tmp_path / "b.json").write_text(json.dumps(alpaca))
    assert read_text(tmp_path / "b.json") == "Do it.\nDone.\n\nAdd\n1+1\n2"
    (tmp_path / "c.txt").write_text("  raw text\n\n kept as is ")
    assert read_text(tmp_path / "c.txt") == "  raw text\n\n kept as is "
    (tmp_path / "s.txt").write_text("Once a cat.\n<|endoftext|>\nOnce a dog.\n<|endoftext|>\n")
    assert read_text(tmp_path / "s.txt") == "Once a cat.\n\nOnce a dog."
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="neither a 'text' field"):
        read_text(tmp_path / "d.jsonl")
    (tmp_path / "e.txt").write_text(" \n")
    with pytest.raises(ValueError, match="is empty"):
        read_text(tmp_path / "e.txt")
    with pytest.raises(ValueError, match="does not exist"):
        read_text(tmp_path / "missing.txt")


@requires_stories
@pytest.mark.parametrize("stride", [None, 128])
def test_matches_transformers_reference_on_stories260k(stride):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(STORIES)
    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    text = read_text(data_file("text/tinystories/TinyStories-valid.head45.txt"))[:3500]
    ids = tokenize_text(text, tok)
    got = perplexity(model, text, tokenizer=tok, seq_len=256, stride=stride, batch_size=2)
    want, count = reference_perplexity(model, ids, 256, stride)
    assert got.tokens_scored == count and got.text_tokens == ids.numel()
    assert got.perplexity == pytest.approx(want, rel=RTOL)
    assert 1.5 < got.perplexity < 50  # a trained model on its own domain, not a broken one
