"""The demo finds the blocks it planted, through the whole pipeline."""

from __future__ import annotations

import json

import transformers
from support import requires_native

from miprun.cli import main as cli
from miprun.pipeline.demo import PLANTED, run_demo

pytestmark = requires_native  # the selectors run in the native core


def test_demo_finds_the_planted_blocks(tmp_path):
    lines = []
    result = run_demo(tmp_path / "demo", progress=False, print_fn=lines.append)
    assert result.found == sorted(PLANTED) and result.found_planted
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["pruned_blocks"] == sorted(PLANTED)
    # planted blocks pass their input through: their single-block MI stands far above the others'
    scores = result.single_block_scores
    assert min(scores[b] for b in PLANTED) > 2 * max(s for b, s in enumerate(scores) if b not in PLANTED)
    assert len(result.generated.split()) > 3
    assert any("found the planted blocks" in line for line in lines)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "demo")
    assert model.config.num_hidden_layers == 8 - len(PLANTED)


def test_demo_command(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "found the planted blocks" in out and str(tmp_path / "d") in out
