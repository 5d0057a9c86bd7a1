"""``miprun prune --from-report``: the plan a report.json records is run again, the same way, to the same weights."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from support import STORIES, data_file, requires_native, requires_stories

import miprun
from miprun.cli import main as cli
from miprun.pipeline.options import PruneOptions, ReportedRun

pytestmark = [requires_stories, requires_native]  # the selectors run in the native core

# Every option away from its default where the CLI lets it be: the re-run must read them all back.
FIRST_RUN = ["--num-remove", 2, "--selector", "optimal", "--estimator", "ksg", "--k", 4, "--seed", 3,
             "--n-samples", 4, "--seq-len", 64, "--batch-size", 3, "--max-run", 3, "--device", "cpu"]


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _weights(folder: Path) -> dict[str, str]:
    """sha256 of every safetensors file of a checkpoint folder, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


def _without_output(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "output"}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A pruned stories260K written by the CLI with non-default options: its folder."""
    calib = data_file("text/tinystories/TinyStories-valid.head45.txt")
    out = tmp_path_factory.mktemp("first") / "out"
    code = cli.main([str(a) for a in ["prune", STORIES, "--calib", calib, "--out", out, "--quiet", "--no-plots",
                                      *FIRST_RUN]])
    assert code == 0
    return out


def test_the_report_records_the_options_given(first):
    recorded = _report(first)["settings"]["options"]
    assert recorded["selection"]["selector"] == "optimal" and recorded["selection"]["num_remove"] == 2
    assert recorded["scoring"]["estimator"] == "ksg" and recorded["scoring"]["k"] == 4
    assert recorded["scoring"]["seed"] == recorded["calibration"]["seed"] == 3
    assert recorded["scoring"]["max_run"] == 3
    assert recorded["calibration"] == {"n_samples": 4, "seq_len": 64, "seed": 3, "held_back": 0.25}
    assert recorded["execution"]["batch_size"] == 3 and recorded["execution"]["device"] == "cpu"
    assert recorded["output"] == {"out_dir": str(first), "overwrite": False, "plots": False, "format": "hf",
                                  "max_ppl_ratio": 50.0}
    # What the report records reads back as the same options.
    assert PruneOptions.from_dict(recorded).to_dict() == recorded
    run = ReportedRun.read(first / "report.json")
    assert run.model == str(STORIES)
    assert run.calibration == _report(first)["settings"]["calibration"]["source"]
    assert run.calibration_sha256 == _report(first)["settings"]["calibration"]["sha256"]


def test_from_report_reproduces_the_plan_and_the_weights(first, tmp_path, capsys):
    out = tmp_path / "again"
    code, stdout, err = _run(["prune", "-", "--from-report", first / "report.json", "--out", out, "--quiet",
                              "--no-plots"], capsys)
    assert code == 0, err
    assert "calibration tokens differ" not in err
    a, b = _report(first), _report(out)
    assert b["pruned_blocks"] == a["pruned_blocks"] and len(a["pruned_blocks"]) == 2
    assert b["kept_blocks"] == a["kept_blocks"]
    assert b["selector"] == a["selector"] == "optimal"
    assert b["score_table"]["values"] == a["score_table"]["values"]  # the same numbers, not just close ones
    assert b["score_table"]["max_run"] == a["score_table"]["max_run"] == 3
    assert b["objective"] == a["objective"]
    assert _without_output(b["settings"]["options"]) == _without_output(a["settings"]["options"])
    assert b["settings"]["options"]["output"] == {"out_dir": str(out), "overwrite": False, "plots": False,
                                                  "format": "hf", "max_ppl_ratio": 50.0}
    assert b["settings"]["model"] == a["settings"]["model"]
    assert b["settings"]["calibration"] == a["settings"]["calibration"]
    assert _weights(out) and _weights(out) == _weights(first)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == \
        json.loads((first / "config.json").read_text())["num_hidden_layers"]
    assert str(a["pruned_blocks"]) in stdout  # the plan is printed as for a plain run


def test_from_report_with_the_model_named(first, tmp_path, capsys):
    # MODEL given instead of "-": the same checkpoint, the same plan.
    out = tmp_path / "named"
    code, _, err = _run(["prune", STORIES, "--from-report", first / "report.json", "--out", out, "--quiet",
                         "--no-plots"], capsys)
    assert code == 0, err
    assert _report(out)["pruned_blocks"] == _report(first)["pruned_blocks"]
    assert _weights(out) == _weights(first)


def test_recorded_options_through_the_api_give_the_same_plan(first):
    report = _report(first)
    options = PruneOptions.from_dict(report["settings"]["options"])
    options = dataclasses.replace(options, output=options.output.replace(out_dir=None))  # nothing written
    result = miprun.prune(report["settings"]["model"], report["settings"]["calibration"]["source"], options,
                          progress=False)
    assert result.out_dir is None
    assert list(result.plan.removed) == report["pruned_blocks"]
    assert result.table.to_dict()["values"] == report["score_table"]["values"]
    assert result.report["settings"]["calibration"]["sha256"] == report["settings"]["calibration"]["sha256"]
    assert _without_output(result.report["settings"]["options"]) == _without_output(report["settings"]["options"])


# ----------------------------------------------------------------------------- refusals
def _assert_refused(code, err, out: Path, *phrases):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, no traceback
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("content", [json.dumps({"hello": 1}), json.dumps([1, 2]),
                                     json.dumps({"format_version": 1, "settings": {"model": "x"}})])
def test_a_json_file_that_is_not_a_report_is_refused(tmp_path, capsys, content):
    bogus = tmp_path / "report.json"
    bogus.write_text(content)
    out = tmp_path / "out"
    code, _, err = _run(["prune", "-", "--from-report", bogus, "--out", out], capsys)
    _assert_refused(code, err, out, str(bogus), "is not a miprun report.json")


def test_a_file_that_is_not_json_or_is_missing_is_refused(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("once upon a time\n")
    out = tmp_path / "out"
    code, _, err = _run(["prune", "-", "--from-report", text, "--out", out], capsys)
    _assert_refused(code, err, out, str(text), "cannot read", "miprun report.json")
    code, _, err = _run(["prune", "-", "--from-report", tmp_path / "absent.json", "--out", out], capsys)
    _assert_refused(code, err, out, "absent.json", "cannot read")


def test_a_report_of_token_ids_given_in_python_is_refused(tmp_path, capsys):
    ids = torch.randint(3, 500, (4, 32), generator=torch.Generator().manual_seed(0))
    first = tmp_path / "from_ids"
    miprun.prune(str(STORIES), ids, num_remove=1, out_dir=first, plots=False, device="cpu", progress=False)
    assert _report(first)["settings"]["calibration"]["source"] == "token ids"
    out = tmp_path / "out"
    code, _, err = _run(["prune", "-", "--from-report", first / "report.json", "--out", out], capsys)
    _assert_refused(code, err, out, "token ids given in Python")
