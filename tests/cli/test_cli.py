"""The miprun command: bad input gives one clear line and exit 2 with nothing written; good input works."""

from __future__ import annotations

import json

import pytest
import transformers
from support import STORIES, data_file, requires_native, requires_stories

from miprun.cli import main as cli

pytestmark = [requires_stories, requires_native]  # the selectors run in the native core


@pytest.fixture()
def calib():
    return str(data_file("text/tinystories/TinyStories-valid.head45.txt"))


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_user_error(code, err, *phrases):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, no traceback
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


def _model_folder(tmp_path, name, config):
    folder = tmp_path / name
    folder.mkdir()
    config.save_pretrained(folder)
    return folder


def _bad_inputs(tmp_path, calib):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("Once upon a time.")
    t5 = _model_folder(tmp_path, "t5", transformers.T5Config(num_layers=2, d_model=16, d_ff=32, num_heads=2,
                                                             vocab_size=50))
    bloom = _model_folder(tmp_path, "bloom", transformers.BloomConfig(n_layer=3, hidden_size=16, n_head=2,
                                                                      vocab_size=50))
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    return {
        "too many blocks": (["--num-blocks", 5, "--calib", calib], ["num_remove=5", "has 5 blocks"]),
        "zero blocks": (["--num-blocks", 0, "--calib", calib], ["num_remove=0", "at least 1"]),
        "empty calibration": (["--num-blocks", 1, "--calib", empty], ["empty"]),
        "short calibration": (["--num-blocks", 1, "--calib", short, "--seq-len", 256],
                              ["tokens", "seq_len=256", "lower seq_len"]),
        "missing calibration": (["--num-blocks", 1, "--calib", tmp_path / "nope.txt"], ["does not exist"]),
        "missing model": (["--num-blocks", 1, "--calib", calib], ["does not exist"], tmp_path / "no_model"),
        "not a model folder": (["--num-blocks", 1, "--calib", calib], ["no config.json"], no_config),
        "not a causal LM": (["--num-blocks", 1, "--calib", calib], ["not a causal language model"], t5),
        "unsupported architecture": (["--num-blocks", 1, "--calib", calib], ["not supported", "llama"], bloom),
        "estimator conflict": (["--num-blocks", 1, "--calib", calib, "--selector", "shortgpt",
                                "--estimator", "hist"], ["shortgpt", "cosine"]),
    }


CASES = ["too many blocks", "zero blocks", "empty calibration", "short calibration", "missing calibration",
         "missing model", "not a model folder", "not a causal LM", "unsupported architecture", "estimator conflict"]


@pytest.mark.parametrize("case", CASES)
def test_prune_bad_input_is_one_line_and_writes_nothing(case, tmp_path, calib, capsys):
    spec = _bad_inputs(tmp_path, calib)[case]
    args, phrases = spec[0], spec[1]
    model = spec[2] if len(spec) > 2 else STORIES
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _run(["prune", model, "--out", out, "--n-samples", 2, "--quiet", *args], capsys)
    _assert_user_error(code, err, *phrases)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary folder left either


def test_out_equal_to_input_is_refused(calib, capsys):
    code, _, err = _run(["prune", STORIES, "--num-blocks", 1, "--calib", calib, "--out", STORIES, "--quiet"], capsys)
    _assert_user_error(code, err, "input model folder")


def test_existing_out_is_refused_without_overwrite(tmp_path, calib, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = _run(["prune", STORIES, "--num-blocks", 1, "--calib", calib, "--out", out, "--quiet"], capsys)
    _assert_user_error(code, err, "already exists", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_argument_errors_are_one_line(capsys):
    code, _, err = _run(["prune", STORIES, "--num-blocks", 1, "--ratio", 0.2, "--calib", "x", "--out", "y"], capsys)
    _assert_user_error(code, err, "not allowed with")
    code, _, err = _run(["prune", STORIES, "--calib", "x", "--out", "y"], capsys)
    _assert_user_error(code, err, "--num-remove")


def test_prune_command_writes_a_loadable_model(tmp_path, calib, capsys):
    out = tmp_path / "pruned"
    code, stdout, err = _run(["prune", STORIES, "--num-blocks", 2, "--calib", calib, "--out", out,
                              "--n-samples", 4, "--seq-len", 64, "--selector", "optimal", "--quiet", "--no-plots"],
                             capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert f"removed blocks {report['pruned_blocks']}" in stdout and str(out) in stdout
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 3


def test_score_command_writes_the_table(tmp_path, calib, capsys):
    out = tmp_path / "table.json"
    code, stdout, err = _run(["score", STORIES, "--calib", calib, "--out", out, "--n-samples", 4, "--seq-len", 32,
                              "--max-run", 3, "--estimator", "gaussian", "--reduction", "per_dim", "--quiet"], capsys)
    assert code == 0, err
    table = json.loads(out.read_text())
    assert table["estimator"] == "gaussian" and table["max_run"] == 3 and table["num_blocks"] == 5
    assert table["values"][4][1] is None and table["values"][0][2] > 0
    assert table["settings"]["reduction"] == "per_dim" and table["settings"]["calibration"]["tokens"] == 128
    # a second run refuses to overwrite the table, and --overwrite replaces it
    code, _, err = _run(["score", STORIES, "--calib", calib, "--out", out, "--quiet"], capsys)
    _assert_user_error(code, err, "already exists")
    code, _, err = _run(["score", STORIES, "--calib", calib, "--out", STORIES / "t.json", "--quiet"], capsys)
    _assert_user_error(code, err, "input model folder")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_write_the_single_process_table(tmp_path, calib, capsys):
    import os
    import subprocess
    import sys
    from pathlib import Path
    common = ["score", str(STORIES), "--calib", calib, "--n-samples", "5", "--seq-len", "32", "--max-run", "2",
              "--skip-first", "1", "--quiet"]
    code, _, err = _run([*common, "--out", tmp_path / "one.json"], capsys)
    assert code == 0, err
    env = dict(os.environ, PYTHONPATH=str(Path(cli.__file__).resolve().parents[2]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "miprun", *common, "--out", str(tmp_path / "two.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["values"] == one["values"]  # histogram counts are all-reduced exactly (5 samples: shards 2 + 3)
    assert two["settings"]["world_size"] == 2 and two["settings"]["tokens"] == one["settings"]["tokens"] == 155
