"""``miprun prune`` stopped by SIGTERM (``timeout``, Slurm) or SIGKILL, in a real process on stories260K.

SIGTERM at any point: exit 143 with the unfinished output removed and an earlier output
at --out intact (or exit 0 with the new output complete, when the run finished first).
SIGKILL while saving leaves the temporary folder; the next run for the same --out removes
it, says so, and succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers

import miprun
from support import STORIES, data_file, requires_native, requires_stories
from tiny_models import folder_digest

pytestmark = [requires_stories, requires_native, pytest.mark.slow]


@pytest.fixture()
def calib():
    return data_file("text/tinystories/TinyStories-valid.head45.txt")


def _start(out, calib, *extra) -> subprocess.Popen:
    # the miprun this test imported (the source tree with its in-place core, or the installed package)
    here = str(Path(miprun.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "miprun", "prune", str(STORIES), "--calib", str(calib), "--num-remove", "2",
            "--out", str(out), "--overwrite", "--n-samples", "8", "--seq-len", "64", "--quiet", *extra]
    return subprocess.Popen(argv, env=env, cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _temp_folders(out):
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


def _wait_for_temp_folder(proc, out, timeout=120.0) -> bool:
    """Poll until the run's temporary folder appears (True) or the run ends (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if _temp_folders(out):
            return True
        time.sleep(0.002)
    return False


def _finish(proc) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _assert_complete(out):
    report = json.loads((out / "report.json").read_text())
    assert len(report["pruned_blocks"]) == 2
    assert transformers.AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 3


def test_sigterm_at_any_point_keeps_the_earlier_output(tmp_path, calib):
    out = tmp_path / "out"
    t = time.monotonic()
    code, err = _finish(_start(out, calib))
    whole = time.monotonic() - t
    assert code == 0, err
    _assert_complete(out)
    earlier = folder_digest(out)

    terminated = 0
    for when in (0.7 * whole, "saving"):  # earlier, Python is still importing
        proc = _start(out, calib)
        if when == "saving":
            saw_temp = _wait_for_temp_folder(proc, out)
        else:
            time.sleep(when)
        proc.send_signal(signal.SIGTERM)
        code, err = _finish(proc)
        assert "Traceback" not in err, (when, err)
        if code == 143:
            terminated += 1
            assert "terminated (SIGTERM); unfinished output removed" in err, err
            assert folder_digest(out) == earlier, when  # the earlier output, untouched
        elif code == -signal.SIGTERM:
            # the default handler: before miprun installed its own (Python still importing, nothing
            # written yet), or after the command returned (interpreter exit, the new output whole)
            assert when != "saving" or not saw_temp or folder_digest(out) != earlier, err
            earlier = folder_digest(out)
        else:
            assert code == 0, (when, code, err)  # finished before the signal: the new output is whole
            earlier = folder_digest(out)
        assert _temp_folders(out) == [], when
        assert not list(tmp_path.glob(".out.old-*")), when
        _assert_complete(out)
    assert terminated >= 1  # at least one signal landed while miprun was working


def test_sigkill_while_saving_leaves_a_temp_folder_the_next_run_removes(tmp_path, calib):
    out = tmp_path / "out"
    for _ in range(3):  # the kill may land after the rename on a fast machine: try again
        proc = _start(out, calib)
        seen = _wait_for_temp_folder(proc, out)
        proc.kill()
        proc.communicate(timeout=60)
        left = _temp_folders(out)
        if seen and left:
            break
        if out.exists():
            break
    else:
        pytest.fail("never caught the run while it was saving")
    if not left:
        pytest.skip("the run finished before SIGKILL landed")
    assert not out.exists()
    code, err = _finish(_start(out, calib))
    assert code == 0, err
    assert f"removed {left[0]}" in err and "unfinished output of an interrupted run" in err, err
    assert _temp_folders(out) == []
    _assert_complete(out)
