"""The guarded writer: what --out and --json may replace, protected inputs, temporary folders, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from miprun.output.guard import (MARKER, OutputDirError, Terminated, atomic_output_dir, check_output_dir,
                                 check_output_file, sigterm_raises, write_output_json)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _miprun_dir(folder, **report):
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"format_version": 1, "pruned_blocks": [1], **report}))
    (folder / "model.safetensors").write_bytes(b"old weights")
    return folder


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture()
def model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


# --- check_output_dir ---

def test_new_folder_is_accepted_and_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_output_dir("a/b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checking writes nothing


def test_project_folder_with_user_files_is_not_replaced(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    (project / "data.csv").write_text("1,2")
    monkeypatch.chdir(project)
    with pytest.raises(OutputDirError, match=r"not an earlier miprun output \(it holds data.csv, notes.txt\)"):
        check_output_dir(".", overwrite=True)
    with pytest.raises(OutputDirError, match="already exists; pass overwrite=True"):
        check_output_dir(".")
    assert _files(project) == ["data.csv", "notes.txt"]


def test_overwrite_accepts_only_empty_or_miprun_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_dir(empty, overwrite=True) == empty
    earlier = _miprun_dir(tmp_path / "earlier")
    assert check_output_dir(earlier, overwrite=True) == earlier
    compared = tmp_path / "compared"
    compared.mkdir()
    (compared / "compare.json").write_text(json.dumps({MARKER: "compare"}))
    assert check_output_dir(compared, overwrite=True) == compared
    # a report.json that miprun did not write does not make a folder replaceable
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.json").write_text(json.dumps({"quarterly": True}))
    with pytest.raises(OutputDirError, match=r"not an earlier miprun output \(it holds report.json\)"):
        check_output_dir(other, overwrite=True)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(8):
        (many / f"f{i}").write_text("x")
    with pytest.raises(OutputDirError, match="f0, f1, f2, f3, f4 and 3 more"):
        check_output_dir(many, overwrite=True)


def test_file_at_out_is_refused(tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(OutputDirError, match="exists and is not a folder"):
        check_output_dir(f, overwrite=True)
    assert f.read_text() == "x"


@pytest.mark.parametrize("where,message", [
    ("model", "is the input model folder"),
    ("model/sub", "is inside the input model folder"),
    (".", "holds the input model folder"),
])
def test_out_overlapping_the_model_is_refused(tmp_path, model, where, message):
    # tmp_path also holds a miprun report, so only the overlap rule can refuse it
    (tmp_path / "report.json").write_text(json.dumps({MARKER: "prune"}))
    with pytest.raises(OutputDirError, match=message):
        check_output_dir(tmp_path / where, overwrite=True, source_dir=model)
    assert _files(model) == ["config.json"]


def test_out_holding_the_calibration_is_refused(tmp_path):
    earlier = _miprun_dir(tmp_path / "earlier")
    calib = earlier / "calib.txt"
    calib.write_text("once upon a time")
    with pytest.raises(OutputDirError, match=f"holds an input {calib}"):
        check_output_dir(earlier, overwrite=True, protect=[calib])
    with pytest.raises(OutputDirError, match=f"is an input {calib}"):
        check_output_dir(calib, overwrite=True, protect=[calib])
    # a protected path that does not exist (a dataset name) protects nothing
    assert check_output_dir(tmp_path / "new", protect=["wikitext"]) == tmp_path / "new"


def test_symlinked_model_is_protected_through_the_link(tmp_path, model):
    link = tmp_path / "link"
    link.symlink_to(model)
    with pytest.raises(OutputDirError, match="inside the input model folder"):
        check_output_dir(model / "out", source_dir=link)
    with pytest.raises(OutputDirError, match="is a symlink"):
        check_output_dir(link, overwrite=True)


# --- check_output_file ---

def test_output_file_inside_the_model_is_refused(model):
    before = (model / "config.json").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(OutputDirError, match=f"is inside the input model folder {model}"):
            check_output_file(model / "config.json", overwrite=overwrite, protect=(model,))
    assert (model / "config.json").read_bytes() == before


def test_output_file_rules(tmp_path, model):
    calib = tmp_path / "calib.txt"
    calib.write_text("text")
    with pytest.raises(OutputDirError, match=f"is an input {calib}"):
        check_output_file(calib, overwrite=True, protect=(model, calib))
    user = tmp_path / "results.json"
    user.write_text('{"mine": 1}')
    with pytest.raises(OutputDirError, match="already exists; pass --overwrite"):
        check_output_file(user)
    with pytest.raises(OutputDirError, match="was not written by miprun"):
        check_output_file(user, overwrite=True)
    assert user.read_text() == '{"mine": 1}'
    with pytest.raises(OutputDirError, match="is a folder"):
        check_output_file(model)
    with pytest.raises(OutputDirError, match="does not exist; create it first"):
        check_output_file(tmp_path / "absent" / "r.json")
    ours = write_output_json(tmp_path / "ours.json", {"x": 1}, kind="eval")
    assert json.loads(ours.read_text()) == {MARKER: "eval", "x": 1}
    with pytest.raises(OutputDirError, match="already exists"):
        write_output_json(ours, {"x": 2}, kind="eval")
    write_output_json(ours, {"x": 2}, kind="eval", overwrite=True)
    assert json.loads(ours.read_text())["x"] == 2


def test_symlink_output_file_is_not_followed(tmp_path):
    target = tmp_path / "target.json"
    write_output_json(target, {"x": 1}, kind="eval")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(OutputDirError, match="was not written by miprun"):
        check_output_file(link, overwrite=True)


# --- temporary folders of other runs ---

def test_temp_folder_of_a_killed_run_is_removed_with_a_warning(tmp_path):
    out = _miprun_dir(tmp_path / "out")
    stale = tmp_path / f".out.tmp-{_dead_pid()}-0123abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    unrelated = tmp_path / f".other.tmp-{_dead_pid()}-0123abcd"
    unrelated.mkdir()
    with pytest.warns(RuntimeWarning, match="unfinished output of an interrupted run"):
        check_output_dir(out, overwrite=True)
    assert not stale.exists() and unrelated.exists()
    assert (out / "model.safetensors").read_bytes() == b"old weights"


def test_temp_folder_of_a_live_writer_is_refused(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".out.tmp-{writer.pid}-0123abcd"
        live.mkdir()
        with pytest.raises(OutputDirError, match=f"another process \\(pid {writer.pid}\\) is writing"):
            check_output_dir(tmp_path / "out")
        with pytest.raises(OutputDirError, match="another process"):
            with atomic_output_dir(tmp_path / "out"):
                pass
        assert live.is_dir() and not (tmp_path / "out").exists()
    finally:
        writer.kill()
        writer.wait()


def test_earlier_output_moved_aside_by_a_killed_run_is_restored(tmp_path):
    # SIGKILL between moving the earlier output aside and renaming the new one in: out is missing
    aside = _miprun_dir(tmp_path / f".out.old-{_dead_pid()}-0123abcd")
    new = tmp_path / f".out.tmp-{_dead_pid()}-4567abcd"
    new.mkdir()
    with pytest.warns(RuntimeWarning) as seen:
        with pytest.raises(OutputDirError, match="already exists"):
            check_output_dir(tmp_path / "out")
    messages = " ".join(str(w.message) for w in seen)
    assert f"restored {tmp_path / 'out'} from {aside}" in messages and f"removed {new}" in messages
    assert not aside.exists() and not new.exists()
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"old weights"


# --- SIGTERM ---

def test_sigterm_while_writing_removes_the_temp_folder_and_keeps_the_earlier_output(tmp_path):
    out = _miprun_dir(tmp_path / "out")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "model.safetensors").write_bytes(b"new")
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("SIGTERM did not interrupt the block")
    assert signal.getsignal(signal.SIGTERM) is before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "model.safetensors").read_bytes() == b"old weights"


def test_sigterm_raises_restores_the_previous_handler():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *a: seen.append(a[0]))
    try:
        with pytest.raises(Terminated):
            with sigterm_raises():
                os.kill(os.getpid(), signal.SIGTERM)
                pytest.fail("SIGTERM did not raise")
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
