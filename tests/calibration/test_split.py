"""The calibration windows are split once: what is scored, measured, fitted and checked on."""

from __future__ import annotations

import pathlib
import tempfile

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tiny_models import tiny_config, word_tokenizer

from miprun.calibration.options import CalibrationOptions
from miprun.calibration.resolve import resolve_calibration
from miprun.calibration.split import split_windows
from miprun.pipeline.compare_eval import text_windows


@given(st.integers(1, 500), st.floats(min_value=0.01, max_value=0.5), st.booleans())
def test_the_split_covers_every_window_and_holds_back_the_last(n, share, score_held_back):
    s = split_windows(n, share, score_held_back=score_held_back)
    if n == 1:  # nothing to hold back: the one window serves every step
        assert s.scored == s.measured == s.heal_fit == (0, 1) and s.heal_check == (0, 0)
        return
    held = s.measured[1] - s.measured[0]
    assert held == min(n - 1, max(1, round(n * share))) and s.measured == (n - held, n) == s.heal_check
    assert s.heal_fit == (0, n - held)
    assert s.scored == ((0, n) if score_held_back else (0, n - held))


def test_rows_and_record():
    ids = torch.arange(40).reshape(8, 5)
    s = split_windows(8, 0.25, score_held_back=False)
    assert torch.equal(s.rows(ids, "measured"), ids[6:]) and torch.equal(s.rows(ids, "scored"), ids[:6])
    assert s.to_dict() == {"windows": 8, "scored": [0, 6], "measured": [6, 8], "heal_fit": [0, 6],
                           "heal_check": [6, 8]}
    with pytest.raises(ValueError, match="no calibration windows"):
        split_windows(0, 0.25, score_held_back=True)


def test_models_that_read_nothing_without_bos_get_it_at_the_start_of_every_window():
    tok = word_tokenizer()
    text = " ".join(["the cat sees a dog ."] * 400)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "calib.txt"
        path.write_text(text)
        options = CalibrationOptions(n_samples=4, seq_len=16)
        llama, desc = resolve_calibration(path, tokenizer=tok, options=options, config=tiny_config("llama"))
        gemma, gdesc = resolve_calibration(path, tokenizer=tok, options=options, config=tiny_config("gemma3_text"))
    assert "bos_first" not in desc and gdesc["bos_first"] is True
    assert (gemma[:, 0] == tok.bos_token_id).all() and torch.equal(gemma[:, 1:], llama[:, :-1])
    stream = torch.arange(5, 45)
    windows = text_windows(torch.cat([torch.tensor([tok.bos_token_id]), stream]), 8, tok.bos_token_id)
    assert windows.shape == (5, 8) and (windows[:, 0] == tok.bos_token_id).all()
    assert torch.equal(windows[:, 1:].reshape(-1), stream[:35])
