"""One document reader for calibration and evaluation texts; binary data is refused."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from tiny_models import CharTokenizer

from miprun.calibration.documents import read_documents, read_text_file
from miprun.calibration.windows import draw_windows, load_calibration
from miprun.evaluate.perplexity import read_text


def test_random_bytes_are_not_calibration_text(tmp_path):
    garbage = tmp_path / "g.txt"
    garbage.write_bytes(random.Random(0).randbytes(10000))
    with pytest.raises(ValueError, match=r"g\.txt is not text: \d+% of its characters are control or undecodable "
                                         r"bytes.*UTF-8"):
        load_calibration(garbage, CharTokenizer(), n_samples=2, seq_len=16)
    with pytest.raises(ValueError, match=r"g\.txt is not text"):
        read_text(garbage)


def test_valid_utf8_that_is_mostly_control_characters_is_refused(tmp_path):
    zeros = tmp_path / "zeros.txt"
    zeros.write_bytes(bytes(5000) + b"a few words")
    with pytest.raises(ValueError, match=r"zeros\.txt is not text: 100% of its characters are control"):
        read_documents(zeros)
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "ok.txt").write_text("plain words\n\ttabbed\r\n")
    (folder / "bad.jsonl").write_bytes(os.urandom(3000))
    with pytest.raises(ValueError, match=r"bad\.jsonl is not text"):
        read_documents(folder)


def test_real_text_passes(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Ünïcödé text, tabs\tand\nnewlines; \x1b[1mone escape\x1b[0m is fine.\n", encoding="utf-8")
    assert read_text_file(f).startswith("Ünïcödé")


def test_latin1_text_is_named_as_not_utf8(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("café au lait ".encode("latin-1") * 50)
    with pytest.raises(ValueError, match=r"latin\.txt is not text: .*byte 3 \(0xe9\) is not UTF-8"):
        read_documents(f)


def test_evaluation_reads_documents_as_calibration_does(tmp_path):
    seed = [{"instruction": "Sort",
             "instances": [{"input": "b a", "output": "a b"}, {"input": "d c", "output": "c d"}]}]
    (tmp_path / "seed.json").write_text(json.dumps(seed))
    assert read_text(tmp_path / "seed.json") == "Sort\nb a\na b\nd c\nc d"
    assert read_documents(tmp_path / "seed.json") == ["Sort\nb a\na b\nd c\nc d"]
    (tmp_path / "notes.md").write_text("  kept as is ")
    assert read_text(tmp_path / "notes.md") == "  kept as is "


def test_identical_windows_are_called_identical():
    with pytest.warns(RuntimeWarning) as record:
        w = draw_windows(torch.arange(100), n_samples=4, seq_len=100, seed=0)
    assert (w == w[0]).all()
    message = str(record[0].message)
    assert "gives 100 tokens, fewer than n_samples x seq_len = 4 x 100 = 400: windows overlap" in message
    assert "all 4 windows are identical" in message and "random offsets" not in message


def test_partly_overlapping_windows_say_how_many_differ():
    with pytest.warns(RuntimeWarning, match=r"only 2 distinct windows fit side by side, the other 3 start at "
                                            r"seeded offsets inside them \(\d+ different windows in all\)"):
        draw_windows(torch.arange(250), n_samples=5, seq_len=100, seed=0)
