"""``miprun eval`` end to end: table, JSON equal to the API's numbers, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import DATA, STORIES, data_file, requires_stories
from tiny_models import random_text, tiny_model, word_tokenizer

from miprun.cli.main import main
from miprun.evaluate.summary import count_parameters, perplexity


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random Llama and its word tokenizer saved as a model folder, plus a text file."""
    root = tmp_path_factory.mktemp("eval_cli")
    tok = word_tokenizer()
    model = tiny_model("llama", preset="eval", vocab=len(tok), max_positions=64, seed=11)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    text = root / "text.txt"
    text.write_text(random_text(400, seed=2))
    return root / "model", text, model, tok


def test_eval_prints_table_and_writes_json_equal_to_api(saved, tmp_path, capsys):
    model_dir, text, model, tok = saved
    out = tmp_path / "res.json"
    rc = main(["eval", str(model_dir), "--ppl", str(text), "--seq-len", "48", "--stride", "16", "--speed",
               "--length", "8", "--decode-tokens", "3", "--repeats", "2", "--warmup", "0", "--json", str(out)])
    assert rc == 0
    shown = capsys.readouterr().out
    assert "perplexity text.txt" in shown and "decode tokens/s" in shown and "parameters (total)" in shown
    res = json.loads(out.read_text())
    want = perplexity(model, Path(text), tokenizer=tok, seq_len=48, stride=16)
    got = res["perplexity"][str(text)]
    assert got["perplexity"] == pytest.approx(want.perplexity, rel=1e-9)
    assert got["tokens_scored"] == want.tokens_scored == 400  # 401 tokens with BOS; all but the first
    assert res["parameters"] == count_parameters(model).to_dict()
    assert res["num_blocks"] == 4 and res["speed"]["length"] == 8 and res["speed"]["decode_tokens_per_s"] > 0
    assert res["versions"]["torch"]


@pytest.mark.parametrize("argv,message", [
    (["--ppl", "absent.txt"], "no such file"),
    (["--ppl", "{text}", "--seq-len", "8", "--stride", "9"], "larger than --seq-len"),
    (["--ppl", "{text}", "--seq-len", "500"], "exceeds the model's maximum length 64"),
    (["--tasks", "piqa", "--data-dir", "{missing}"], "is not a folder"),
])
def test_user_errors_exit_2_with_one_line(saved, tmp_path, capsys, argv, message):
    model_dir, text, _, _ = saved
    out = tmp_path / "res.json"
    argv = [a.format(text=text, missing=tmp_path / "missing") for a in argv]
    rc = main(["eval", str(model_dir), *argv, "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
@requires_stories
def test_eval_tasks_through_the_command(tmp_path):
    data_file("bench/llm-foundry/copa.jsonl")
    out = tmp_path / "res.json"
    rc = main(["eval", str(STORIES), "--tasks", "copa", "--limit", "4", "--data-dir", str(DATA / "bench"),
               "--json", str(out)])
    assert rc == 0
    task = json.loads(out.read_text())["tasks"]["miprun_copa"]
    assert task["samples"] == 4 and task["total"] == 100 and 0 <= task["metrics"]["acc"] <= 1
