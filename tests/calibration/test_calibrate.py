"""Calibration windows: file formats, packing, seeded draws and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from support import STORIES, data_file, requires_stories
from tiny_models import CharTokenizer

from miprun.calibration.windows import draw_windows, load_calibration, read_documents, record_text, window_length


def test_txt_documents_are_joined_with_eos(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("abc<|endoftext|>de<|endoftext|>fgh")
    ids = load_calibration(f, CharTokenizer(), n_samples=1, seq_len=10, seed=0)
    expected = [10 + ord(c) % 200 for c in "abc"] + [2] + [10 + ord(c) % 200 for c in "de"] + [2] + \
               [10 + ord(c) % 200 for c in "fgh"]
    assert ids.tolist() == [expected]
    assert ids.dtype == torch.long


def test_json_jsonl_alpaca_and_folders(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "one.jsonl").write_text(json.dumps({"text": "hello"}) + "\n\n" + json.dumps({"text": "x"}) + "\n")
    (tmp_path / "d" / "two.json").write_text(json.dumps([{"instruction": "Add", "input": "1 2", "output": "3"},
                                                         {"instruction": "Say hi", "input": "", "output": "hi"}]))
    (tmp_path / "d" / "skip.csv").write_text("not read")
    assert read_documents(tmp_path / "d") == ["hello", "x", "Add\n1 2\n3", "Say hi\nhi"]
    assert record_text({"instruction": "I", "instances": [{"input": "a", "output": "b"}]}) == "I\na\nb"
    assert record_text("plain") == "plain"


def test_windows_are_seeded_distinct_and_cover_the_stream():
    stream = torch.arange(1000)
    a = draw_windows(stream, n_samples=8, seq_len=50, seed=1)
    b = draw_windows(stream, n_samples=8, seq_len=50, seed=1)
    c = draw_windows(stream, n_samples=8, seq_len=50, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    starts = a[:, 0]
    assert len(set(starts.tolist())) == 8 and all(s % 50 == 0 for s in starts.tolist())  # no overlap
    assert torch.equal(a - a[:, :1], torch.arange(50).expand(8, 50))  # contiguous windows


def test_too_few_windows_warns_and_fills_with_offsets():
    with pytest.warns(RuntimeWarning, match="2 distinct windows"):
        w = draw_windows(torch.arange(250), n_samples=5, seq_len=100, seed=0)
    assert w.shape == (5, 100)
    assert w[:2, 0].tolist() == [0, 100] and (w[:, -1] < 250).all()


def test_errors_say_what_to_do(tmp_path):
    tok = CharTokenizer()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_calibration(tmp_path / "missing.txt", tok)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_calibration(empty, tok)
    short = tmp_path / "short.txt"
    short.write_text("x" * 30)
    with pytest.raises(ValueError, match=r"only 30 tokens.*seq_len=64.*at most 30"):
        load_calibration(short, tok, n_samples=2, seq_len=64)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2"):
        load_calibration(bad, tok)
    nofield = tmp_path / "nofield.json"
    nofield.write_text(json.dumps([{"body": "x"}]))
    with pytest.raises(ValueError, match="'text' field"):
        load_calibration(nofield, tok)
    (tmp_path / "other.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported type"):
        load_calibration(tmp_path / "other.csv", tok)
    with pytest.raises(ValueError, match="n_samples"):
        load_calibration(short, tok, n_samples=0)


def test_window_length_respects_the_model_limit():
    class Cfg:
        max_position_embeddings = 512
    assert window_length(None, Cfg()) == 512
    assert window_length(128, Cfg()) == 128
    assert window_length(None, None) == 2048
    with pytest.raises(ValueError, match="max_position_embeddings=512"):
        window_length(1024, Cfg())


@requires_stories
def test_real_text_with_the_stories_tokenizer():
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(STORIES)
    src = data_file("text/tinystories/TinyStories-valid.head45.txt")
    ids = load_calibration(src, tok, n_samples=16, seq_len=128, seed=0)
    assert ids.shape == (16, 128) and int(ids.min()) >= 0 and int(ids.max()) < len(tok)
    assert (ids == tok.eos_token_id).any()  # stories are separated by EOS
    alpaca = load_calibration(data_file("text/alpaca/alpaca_5000.json"), tok, n_samples=4, seq_len=64, seed=0)
    assert alpaca.shape == (4, 64)
    wiki = data_file("text/wikitext-2-raw/wiki.valid.raw")  # WikiText's plain-text suffix
    raw = load_calibration(wiki, tok, n_samples=4, seq_len=64, seed=0)
    assert raw.shape == (4, 64)
    assert not torch.equal(raw, alpaca)


def test_dataset_names_go_to_the_datasets_library(monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the datasets library is not installed")
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "absent":
            raise FileNotFoundError("not in the local cache")
        return [{"text": "a b c"}, {"instruction": "do", "input": "", "output": "done"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert read_documents("wikitext:wikitext-2-raw-v1") == ["a b c", "do\ndone"]
    assert calls == [("wikitext", "wikitext-2-raw-v1", "train")]
    with pytest.raises(FileNotFoundError, match="could not be loaded locally"):
        read_documents("absent")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_documents("/no/such/file.txt")  # a path is never looked up as a dataset
