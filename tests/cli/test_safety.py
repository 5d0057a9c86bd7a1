"""The command never writes over its inputs or a user's files, whatever the arguments.

Each case is a real mistake (``--json`` naming the model's config, ``--out .`` with
``--overwrite`` in a project folder, the calibration file inside ``--out``, ...), run
through the command itself; the property test then tries argument combinations of every
subcommand and checks that each run either succeeds or refuses with one line, writing
nothing and leaving the inputs as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import requires_native
from tiny_models import random_text, save_sharded, tiny_model, word_tokenizer

from miprun.cli import compare as compare_cli
from miprun.cli.main import main
from miprun.output.guard import MARKER

pytestmark = [requires_native]  # prune and compare select blocks in the native core

FAST = ["--n-samples", "4", "--seq-len", "16", "--quiet"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A tiny Llama with its tokenizer saved as a model folder, and a calibration text."""
    root = tmp_path_factory.mktemp("safety")
    tok = word_tokenizer()
    save_sharded(tiny_model("llama", preset="eval", vocab=len(tok), max_positions=64, seed=3), root / "model")
    tok.save_pretrained(root / "model")
    (root / "calib.txt").write_text(random_text(1500, seed=1))
    return root


@pytest.fixture()
def area(template, tmp_path):
    """A fresh copy of the model and calibration under tmp_path: (model folder, calibration file)."""
    shutil.copytree(template / "model", tmp_path / "model")
    shutil.copy(template / "calib.txt", tmp_path / "calib.txt")
    return tmp_path / "model", tmp_path / "calib.txt"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted([path, *path.rglob("*")] if path.is_dir() else [path]):
        h.update(str(p.relative_to(path.parent)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _listing(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in folder.rglob("*")}


def _run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _refused(code, err, *phrases) -> None:
    """Exit 2 with exactly one line on stderr, holding every phrase."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


def _prune(model, calib, out, *extra):
    return _run(["prune", model, "--calib", calib, "--num-remove", 1, "--out", out, "--no-plots", *FAST, *extra])


# --- 1. eval --json ---

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_eval_json_into_the_model_config_is_refused(area, overwrite):
    model, _ = area
    before = _digest(model)
    code, _, err = _run(["eval", model, "--json", model / "config.json", *overwrite])
    _refused(code, err, "is inside the input model folder", str(model))
    assert _digest(model) == before


def test_eval_json_over_a_user_file(area, tmp_path):
    model, _ = area
    user = tmp_path / "results.json"
    user.write_text('{"my": "numbers"}')
    code, _, err = _run(["eval", model, "--json", user])
    _refused(code, err, "already exists", "--overwrite")
    code, _, err = _run(["eval", model, "--json", user, "--overwrite"])
    _refused(code, err, "was not written by miprun")
    assert user.read_text() == '{"my": "numbers"}'


def test_eval_json_over_its_own_earlier_result_with_overwrite(area, tmp_path):
    model, _ = area
    out = tmp_path / "results.json"
    out.write_text(json.dumps({MARKER: "eval", "num_blocks": 99}))
    code, _, err = _run(["eval", model, "--json", out])
    _refused(code, err, "already exists")
    code, _, err = _run(["eval", model, "--json", out, "--overwrite"])
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result[MARKER] == "eval" and result["num_blocks"] == 4


def test_score_table_is_replaced_by_the_next_score_run(area, tmp_path):
    model, calib = area
    out = tmp_path / "table.json"
    argv = ["score", model, "--calib", calib, "--out", out, *FAST]
    assert _run(argv)[0] == 0
    assert json.loads(out.read_text())[MARKER] == "score"
    code, _, err = _run(argv + ["--overwrite", "--estimator", "gaussian"])
    assert code == 0, err
    assert json.loads(out.read_text())["estimator"] == "gaussian"


# --- 2. prune --out ---

def test_prune_out_dot_in_a_project_folder_is_refused(area, tmp_path, monkeypatch):
    model, calib = area
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('mine')")
    (project / "data").mkdir()
    (project / "data" / "rows.csv").write_text("1,2")
    before = _listing(project)
    monkeypatch.chdir(project)
    code, _, err = _prune(model, calib, ".", "--overwrite")
    _refused(code, err, f"--out {project} exists and is not an earlier miprun output", "data, train.py")
    assert _listing(project) == before


def test_prune_calibration_inside_out_is_refused(area, tmp_path):
    model, calib = area
    out = tmp_path / "out"
    assert _prune(model, calib, out)[0] == 0  # an earlier miprun output: --overwrite alone would replace it
    inside = out / "calib.txt"
    shutil.copy(calib, inside)
    before = _listing(out)
    code, _, err = _prune(model, inside, out, "--overwrite")
    _refused(code, err, f"holds an input {inside}")
    assert _listing(out) == before


@pytest.mark.parametrize("where,message", [
    ("model", "is the input model folder"),
    ("model/pruned", "is inside the input model folder"),
    (".", "holds the input model folder"),
])
def test_prune_out_overlapping_the_model_is_refused(area, tmp_path, where, message):
    model, calib = area
    (tmp_path / "report.json").write_text(json.dumps({MARKER: "prune"}))  # only the overlap rule refuses "."
    before, listing = _digest(model), _listing(tmp_path)
    code, _, err = _prune(model, calib, tmp_path / where, "--overwrite")
    _refused(code, err, message)
    assert _digest(model) == before and _listing(tmp_path) == listing


def test_prune_overwrite_of_an_empty_folder(area, tmp_path):
    model, calib = area
    out = tmp_path / "empty"
    out.mkdir()
    code, _, err = _prune(model, calib, out)
    _refused(code, err, "already exists")
    code, _, err = _prune(model, calib, out, "--overwrite")
    assert code == 0, err
    assert transformers.AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 3


def test_prune_overwrite_of_an_earlier_output_replaces_it(area, tmp_path):
    model, calib = area
    out = tmp_path / "out"
    assert _prune(model, calib, out)[0] == 0
    assert json.loads((out / "report.json").read_text())["settings"]["num_remove"] == 1
    code, _, err = _run(["prune", model, "--calib", calib, "--num-remove", 2, "--out", out, "--no-plots",
                         "--overwrite", *FAST])
    assert code == 0, err
    assert json.loads((out / "report.json").read_text())["settings"]["num_remove"] == 2
    assert transformers.AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.txt", "model", "out"]  # nothing left beside


# --- 3. compare --out ---

@pytest.fixture()
def no_work(monkeypatch):
    """Fail the test if the command gets as far as loading the model or comparing."""
    def fail(*a, **k):
        raise AssertionError("the output should have been refused before any work")
    monkeypatch.setattr(compare_cli, "load_tokenizer", fail)
    monkeypatch.setattr(compare_cli, "open_source", fail)
    monkeypatch.setattr(compare_cli, "compare", fail)


def test_compare_out_model_folder_is_refused_before_any_work(area, no_work):
    model, calib = area
    before = _digest(model)
    code, _, err = _run(["compare", model, "--num-remove", 1, "--calib", calib, "--out", model, "--overwrite"])
    _refused(code, err, f"is an input {model}")
    assert _digest(model) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_compare_out_existing_file_is_refused_before_any_work(area, tmp_path, no_work, overwrite):
    model, calib = area
    existing = tmp_path / "results"
    existing.write_text("mine")
    code, _, err = _run(["compare", model, "--num-remove", 1, "--calib", calib, "--out", existing, *overwrite])
    _refused(code, err, "exists and is not a folder")
    assert existing.read_text() == "mine"


# --- 5. any arguments: exit 0 or a one-line refusal, nothing written on refusal, inputs unchanged ---

# Where an output may go and which calibration is read: names resolved in the example's folder (_paths).
OUT_PATHS = ["new", "new_dir/sub", "model", "model/config.json", "model/sub", ".", "calib.txt", "holds_calib",
             "holds_calib/calib.txt", "user_file.json", "user_dir", "empty_dir", "miprun.json", "miprun_out",
             "missing/deep/out.json"]
CALIBS = ["calib.txt", "holds_calib/calib.txt", "missing.txt", "empty.txt", "model"]
NAMES = OUT_PATHS + CALIBS


def _paths(root: Path) -> None:
    (root / "empty.txt").write_text("")
    (root / "holds_calib").mkdir()
    (root / "holds_calib" / "report.json").write_text(json.dumps({MARKER: "prune"}))
    shutil.copy(root / "calib.txt", root / "holds_calib" / "calib.txt")
    (root / "user_file.json").write_text('{"mine": true}')
    (root / "user_dir").mkdir()
    (root / "user_dir" / "keep.txt").write_text("mine")
    (root / "empty_dir").mkdir()
    (root / "miprun.json").write_text(json.dumps({MARKER: "eval"}))
    (root / "miprun_out").mkdir()
    (root / "miprun_out" / "report.json").write_text(json.dumps({MARKER: "prune"}))


# Per option: (good values, bad values: out of range, not numbers, overlapping or missing paths).
# Options with good values [] are left out unless they are the example's fault; those marked
# required always appear (a good value unless faulted).
_CALIB = {"--n-samples": (["2", "4"], ["0", "-3", "2.5", "x"]),
          "--seq-len": (["8", "16"], ["0", "-1", "100000", "1e3"]),
          "--calib": (["calib.txt"], ["holds_calib/calib.txt", "missing.txt", "empty.txt", "model"]),
          "--skip-first": (["0", "2"], ["-1", "16", "100"]),
          "--bins": (["8", "auto"], ["0", "1", "300", "bogus"]),
          "--max-run": (["1", "2"], ["0", "-1", "9", "x"]),
          "--estimator": (["hist", "gaussian"], ["cosine", "nope"]),
          "--seed": (["0", "7"], ["-1", "x"])}
SPECS = {
    "prune": ({**_CALIB, "--num-remove": (["1", "2", "3"], ["0", "-1", "4", "9", "1.5", "x"]),
               "--ratio": (["0.25", "0.5"], ["0", "1", "-0.2", "1.5", "nan", "inf", "half"])},
              {"--n-samples", "--seq-len", "--calib"}),
    "score": (_CALIB, {"--n-samples", "--seq-len", "--calib"}),
    "eval": ({"--seq-len": (["16", "32"], ["0", "-2", "100000", "x"]), "--stride": (["8"], ["0", "64", "-2"]),
              "--ppl": (["calib.txt"], ["missing.txt", "empty.txt", "model"]),
              "--batch": ([], ["0", "-1"])}, set()),
    "compare": ({"--num-remove": (["1", "2"], ["0", "-1", "4", "9", "x"]), "--n-samples": (["2", "4"], ["0", "-1"]),
                 "--seq-len": (["16"], ["0", "100000"]), "--calib-seq-len": (["16"], ["0", "100000", "-5"]),
                 "--calib": (["calib.txt"], ["holds_calib/calib.txt", "missing.txt", "empty.txt", "model"]),
                 "--eval-text": (["calib.txt"], ["missing.txt", "model"]),
                 "--oracle-limit": (["0"], ["-1"]), "--estimators": (["hist:pooled"], ["nope:pooled", "hist"])},
                {"--num-remove", "--n-samples", "--seq-len", "--calib-seq-len", "--calib", "--oracle-limit",
                 "--estimators"}),
}
OUT_FLAG = {"prune": "--out", "score": "--out", "eval": "--json", "compare": "--out"}


@st.composite
def _arguments(draw, command):
    """One command line: at most one option faulty (so that later checks are reached), any output path."""
    options, required = SPECS[command]
    fault = draw(st.sampled_from([None] * 3 + list(options)))
    argv = [command, "{model}"]
    how_many = draw(st.sampled_from(["--num-remove", "--ratio"])) if command == "prune" else None
    for flag, (good, bad) in options.items():
        if flag == fault:
            argv += [flag, draw(st.sampled_from(bad))]
        elif good and (flag in required or flag == how_many or draw(st.booleans())):
            argv += [flag, draw(st.sampled_from(good))]
    out = draw(st.sampled_from([None, *OUT_PATHS])) if command != "prune" else draw(st.sampled_from(OUT_PATHS))
    if out is not None:
        argv += [OUT_FLAG[command], out]
    if draw(st.booleans()):
        argv.append("--overwrite")
    return argv + (["--no-plots"] if command == "prune" else []) + ([] if command == "eval" else ["--quiet"])


def _check_any_arguments(template, argv, monkeypatch):
    with tempfile.TemporaryDirectory(dir=template) as name:
        root = Path(name)
        shutil.copytree(template / "model", root / "model")
        shutil.copy(template / "calib.txt", root / "calib.txt")
        _paths(root)
        argv = [str(root / a) if i > 1 and a in NAMES else a for i, a in enumerate(argv)]
        argv[1] = str(root / "model")
        inputs = {p: _digest(root / p) for p in ("model", "calib.txt", "holds_calib/calib.txt")}
        before = _listing(root)
        with monkeypatch.context() as m:
            m.chdir(root)  # a default --out (compare) lands in the example's folder
            code, _, err = _run(argv)
        assert code in (0, 2), (argv, code, err)
        assert "Traceback" not in err, (argv, err)
        if code == 2:
            assert len([line for line in err.splitlines() if line.strip()]) == 1, (argv, err)
            assert _listing(root) == before, argv
        assert {p: _digest(root / p) for p in inputs} == inputs, argv
        assert not [p for p in root.rglob(".*tmp-*")], argv


@pytest.mark.parametrize("command", list(SPECS))
def test_any_arguments_refuse_cleanly_or_succeed(template, command, monkeypatch):
    examples = {"prune": 40, "score": 30, "eval": 30, "compare": 15}[command]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(argv=_arguments(command))
    def check(argv):
        _check_any_arguments(template, argv, monkeypatch)

    check()
