"""SLEB and verify on stories260K (5 blocks) against brute force over the loss oracle."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from support import STORIES, data_file, requires_native, requires_stories

from miprun.cli.main import main as cli_main
from miprun.evaluate.calibration_loss import CalibrationLoss
from miprun.pipeline.options import PruneOptions
from miprun.pipeline.prune import prune
from miprun.scoring.score import score_blocks
from miprun.measure import Measurer
from miprun.selection.options import AUTO_REFINE
from miprun.selection.sleb import sleb
from miprun.selection.verify import verify

pytestmark = [requires_stories, requires_native]

torch.set_num_threads(2)
N_WINDOWS, SEQ_LEN = 4, 32


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(STORIES).eval()


@pytest.fixture(scope="module")
def calib():
    return data_file("text/tinystories/TinyStories-valid.head45.txt")


@pytest.fixture(scope="module")
def ids(calib):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(STORIES)
    flat = tok(calib.read_text(encoding="utf-8")[:20000], return_tensors="pt")["input_ids"][0]
    return flat[:N_WINDOWS * SEQ_LEN].reshape(N_WINDOWS, SEQ_LEN)


@pytest.fixture(scope="module")
def oracle(model, ids):
    return CalibrationLoss(model, ids, batch_size=4)


def _brute_greedy(loss, num_blocks, num_remove):
    removed: list[int] = []
    for _ in range(num_remove):
        left = [b for b in range(num_blocks) if b not in removed]
        removed.append(min(left, key=lambda b: (loss(tuple(sorted(removed + [b]))), b)))
    return sorted(removed)


@pytest.mark.parametrize("num_remove", [1, 2, 3, 4])
def test_sleb_is_the_greedy_path_over_the_oracle(oracle, model, ids, num_remove):
    plan = sleb(oracle, 5, num_remove)
    assert plan.removed == _brute_greedy(oracle, 5, num_remove)
    assert plan.evaluations == sum(5 - i for i in range(num_remove))  # every candidate of every step measured
    steps = [t for t in plan.trace if t["kind"] == "step"]
    assert [len(s["candidates"]) for s in steps] == [5 - i for i in range(num_remove)]
    for s in steps:  # each step removes the block of least loss among its candidates
        assert s["value"] == min(c["value"] for c in s["candidates"])
    assert plan.trace[-1]["kind"] == "summary" and plan.trace[-1]["plans_measured"] == plan.evaluations
    assert steps[-1]["value"] == pytest.approx(oracle(tuple(plan.removed)))
    # the measurer runs one batch per step and finds the same path (its losses equal the full forward's)
    measurer = Measurer(model, ids, batch_size=4)
    swept = sleb(measurer, 5, num_remove)
    assert swept.removed == plan.removed and swept.trace[-1]["requests"] == num_remove
    assert measurer.sweeps == num_remove and measurer.block_runs < measurer.naive_block_runs


@pytest.fixture(scope="module")
def table(model, ids):
    # scored on the first windows, as prune(verify=...) does; the oracle's windows are the held-back ones
    return score_blocks(model, ids[:3], max_run=4, progress=False)


@pytest.mark.parametrize("num_remove", [1, 2, 3])
@pytest.mark.parametrize("selector", ["fast_block_select", "optimal", "greedy"])
def test_verify_keeps_its_best_measured_candidate(model, ids, table, selector, num_remove):
    held = CalibrationLoss(model, ids[3:], batch_size=4)
    plan = verify(table, num_remove, held, selector=selector, k=3)
    entry = plan.trace[-1]
    values = [c["value"] for c in entry["candidates"]]
    assert entry["value"] == min(values) == held(tuple(plan.removed))
    assert all(c["value"] == held(tuple(c["removed"])) for c in entry["candidates"])
    assert entry["measured"]["plans_measured"] == len(values) == len({tuple(c["removed"]) for c in entry["candidates"]})


@pytest.mark.parametrize("criterion", ["loss", "kl"])
@pytest.mark.parametrize("num_remove", [1, 2, 3, 4])
def test_verify_with_every_plan_is_the_exhaustive_best(model, ids, table, num_remove, criterion):
    held = Measurer(model, ids[3:], batch_size=4)
    k = math.comb(5, num_remove)
    plan = verify(table, num_remove, held, selector="optimal", k=k, portfolio=False, criterion=criterion)
    every = list(itertools.combinations(range(5), num_remove))
    values = dict(zip(every, held(every, criterion=criterion)))
    best = min(every, key=lambda c: (values[c], c))
    assert plan.removed == list(best)
    assert {tuple(c["removed"]) for c in plan.trace[-1]["candidates"]} == set(every)
    assert held.sweeps == 1  # every candidate in one sweep


def test_prune_sleb_and_verify_report(calib, tmp_path):
    common = dict(num_remove=2, n_samples=4, seq_len=SEQ_LEN, progress=False, plots=False)
    r = prune(STORIES, calib, selector="sleb", out_dir=tmp_path / "sleb", **common)
    report = json.loads((tmp_path / "sleb" / "report.json").read_text())
    assert report["selector"] == "sleb" and report["pruned_blocks"] == r.plan.removed
    assert report["sleb"]["plans_measured"] == 9 and len(report["sleb"]["steps"]) == 2
    assert report["measure"]["windows"] == 1 and report["measure"]["sweeps"] == 2  # one sweep per step
    assert report["sleb"]["criterion"] == "loss"
    assert report["settings"]["calibration_split"] == {"windows": 4, "scored": [0, 3], "measured": [3, 4],
                                                       "heal_fit": [0, 3], "heal_check": [3, 4]}

    r = prune(STORIES, calib, selector="optimal", verify=2, out_dir=tmp_path / "verify", **common)
    report = json.loads((tmp_path / "verify" / "report.json").read_text())
    v = report["verify"]
    assert report["measure"]["windows"] == 1 and report["score_table"] is not None  # max(1, 4 // 4) held back
    assert r.table.settings["tokens"] == 3 * SEQ_LEN  # scored on the other 3 windows
    assert report["pruned_blocks"] == v["candidates"][v["chosen"]]["removed"]
    assert v["value"] == min(c["value"] for c in v["candidates"] if "value" in c) and v["criterion"] == "kl"
    assert all(c["kl"] == c["value"] and c["loss"] > 0 for c in v["candidates"] if "value" in c)
    assert report["settings"]["options"]["selection"]["refine"] == AUTO_REFINE and v["refine"]["kind"] == "refine"
    assert 1 <= len(v["refine"]["rounds"]) <= AUTO_REFINE
    assert v["measured"]["plans_measured"] == report["measure"]["measured"]  # one cache for verify and refine
    assert report["settings"]["options"]["selection"]["verify"] == 2
    assert {"shortgpt", "gromov", "fast_block_select@gaussian", "optimal@gaussian"} <= set(v["portfolio"])
    assert set(report["score_table"]["companions"]) == {"cosine", "angular", "gaussian"}
    # the plan check reads the measurer's cache: the chosen plan on the same windows
    assert report["plan_check"]["pruned_perplexity"] == pytest.approx(math.exp(
        v["candidates"][v["chosen"]]["loss"]))


def test_measured_selection_runs_streamed_and_mapped(calib, tmp_path):
    common = dict(num_remove=2, n_samples=8, seq_len=SEQ_LEN, progress=False, plots=False, verify=2)
    plans = {}
    for name, placement in [("memory", {}), ("offload", {"offload": True}), ("map", {"device_map": "auto"})]:
        r = prune(str(STORIES), calib, out_dir=tmp_path / name, **placement, **common)
        v = r.report["verify"]
        plans[name] = (r.plan.removed, [(c["removed"], c.get("value")) for c in v["candidates"]])
        assert "plan_check" in r.report
    assert plans["memory"][0] == plans["offload"][0] == plans["map"][0]
    for other in ("offload", "map"):
        for (a, va), (b, vb) in zip(plans["memory"][1], plans[other][1]):
            assert a == b and (va is None) == (vb is None)
            if va is not None:
                assert vb == pytest.approx(va, rel=1e-5, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2 windows"):
        prune(STORIES, calib, num_remove=2, verify=2, n_samples=1, seq_len=SEQ_LEN, progress=False)


def test_cli_verify_no_portfolio(calib, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(["prune", str(STORIES), "--calib", str(calib), "--num-remove", "1", "--n-samples", "4",
                   "--seq-len", str(SEQ_LEN), "--verify", "2", "--no-portfolio", "--out", str(out), "--no-plots",
                   "--quiet"])
    assert rc == 0
    v = json.loads((out / "report.json").read_text())["verify"]
    assert v["portfolio"] == [] and len([c for c in v["candidates"] if c["source"] != "refine"]) == 2


def test_cli_refine_off_and_refused_without_verify(calib, tmp_path, capsys):
    common = ["prune", str(STORIES), "--calib", str(calib), "--num-remove", "1", "--n-samples", "4",
              "--seq-len", str(SEQ_LEN), "--no-plots"]
    assert cli_main(common + ["--refine", "0", "--out", str(tmp_path / "off")]) == 0
    v = json.loads((tmp_path / "off" / "report.json").read_text())["verify"]
    assert "refine" not in v and v["measured"]["plans_measured"] >= len(v["candidates"])
    assert "verify: " in capsys.readouterr().out
    assert cli_main(common + ["--refine", "2", "--verify", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "needs verify" in capsys.readouterr().err and not (tmp_path / "bad").exists()
