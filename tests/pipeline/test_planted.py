"""The default options find near-identity blocks planted in a model of random weights.

On random weights the calibration loss is noise (the model predicts nothing), so removing a
random block can lower it by chance; the KL divergence from the unpruned model is zero only
for blocks that change nothing, which is what the planted blocks are.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from support import requires_native

from miprun.pipeline.demo import demo_model, demo_text, demo_tokenizer
from miprun.pipeline.prune import prune

pytestmark = requires_native


@pytest.mark.parametrize("seed, planted", [(0, (1, 4)), (1, (2, 5, 6)), (2, (3, 4, 7)), (3, (0, 6))])
def test_the_default_finds_the_planted_blocks(seed, planted):
    torch.manual_seed(seed)
    tok = demo_tokenizer()
    model = demo_model(tok, seed=seed, planted=planted)
    with tempfile.TemporaryDirectory() as work:
        calib = Path(work) / "stories.txt"
        calib.write_text(demo_text(seed + 10), encoding="utf-8")
        result = prune(model, calib, tokenizer=tok, num_remove=len(planted), n_samples=32, seq_len=64,
                       progress=False)
    assert result.report["settings"]["options"]["selection"]["verify"] == 2  # the defaults: measured, refined
    assert result.report["verify"]["criterion"] == "kl"
    assert result.plan.removed == sorted(planted), (seed, result.report["verify"]["candidates"])
