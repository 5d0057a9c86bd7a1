"""The redesign changed no number: score tables, plans and pruned weights equal those recorded before it.

``golden.json`` was written by the pre-redesign revision (commit add10d6) with the
settings below, on 2 torch threads; every entry is compared exactly (floats bit for bit,
weights by sha256).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import miprun
from miprun.pipeline.demo import demo_model, demo_tokenizer
from support import STORIES, requires_native, requires_stories, torch_threads

GOLDEN = json.loads((Path(__file__).with_name("golden.json")).read_text())
VARIANTS = [("hist", "pooled"), ("hist", "per_dim"), ("ksg", "pooled"), ("ksg", "per_dim"), ("ksg", "projection"),
            ("gaussian", "pooled"), ("gaussian", "per_dim"), ("cosine", "pooled"), ("angular", "pooled")]
SELECTORS = {"hist": ["fast_block_select", "optimal", "exhaustive", "greedy"],
             "ksg": ["fast_block_select", "optimal", "greedy"], "gaussian": ["fast_block_select", "optimal", "greedy"],
             "cosine": ["shortgpt"], "angular": ["gromov"]}


@pytest.fixture(autouse=True)
def _recorded_threads():
    """The float sums of gaussian, cosine and angular depend on torch's thread count: use the recording's (2)."""
    with torch_threads(2):
        yield


def weights_digest(folder: Path) -> str:
    """sha256 over every tensor of a saved checkpoint, by name, as raw bytes."""
    from safetensors.torch import load_file
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob("*.safetensors")):
        tensors = load_file(f)
        for name in sorted(tensors):
            h.update(name.encode())
            h.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _same(a, b) -> bool:
    """Equal, with NaN equal to NaN (the table's unused cells)."""
    return all((x == y) or (x != x and y != y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)) and len(a) == len(b)


def _check(model, ids, num_remove, tokenizer, gold, tmp_path):
    for est, red in VARIANTS:
        key = f"{est}/{red}"
        table = miprun.score_blocks(model, ids, estimator=est, reduction=red, max_run=num_remove, progress=False)
        got = [[float(v) for v in row] for row in table.values]
        assert _same(got, gold["tables"][key]), key
        for sel in SELECTORS[est]:
            plan = miprun.select(table, num_remove, selector=sel)
            want = gold["plans"][f"{key}/{sel}"]
            assert plan.removed == want["removed"], (key, sel)
            assert plan.evaluations == want["evaluations"], (key, sel)
            assert plan.objective == want["objective"], (key, sel)
    out = tmp_path / "out"
    # the paper's method as recorded (verify=0: every window scored, Fast-Block-Select's own plan)
    miprun.prune(model, ids, num_remove=num_remove, out_dir=out, tokenizer=tokenizer, progress=False, plots=False,
                 verify=0)
    report = json.loads((out / "report.json").read_text())
    assert report["pruned_blocks"] == gold["prune"]["pruned_blocks"]
    assert report["kept_blocks"] == gold["prune"]["kept_blocks"]
    assert set(gold["prune"]["report_keys"]) <= set(report)
    assert weights_digest(out) == gold["prune"]["weights_sha256"]


@requires_native
def test_demo_model_unchanged(tmp_path):
    tok = demo_tokenizer()
    ids = torch.randint(4, len(tok), (8, 48), generator=torch.Generator().manual_seed(0))
    _check(demo_model(tok, seed=0), ids, 3, tok, GOLDEN["demo"], tmp_path)


@requires_native
@requires_stories
@pytest.mark.parametrize("offload", [False, True])
def test_stories260k_unchanged(tmp_path, offload):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    ids = torch.randint(3, model.config.vocab_size, (8, 64), generator=torch.Generator().manual_seed(1))
    if not offload:
        _check(model, ids, 2, AutoTokenizer.from_pretrained(STORIES), GOLDEN["stories260K"], tmp_path)
        return
    gold = GOLDEN["stories260K_offload"]
    # streamed, the paper's method as recorded (verify=0: every window scored, Fast-Block-Select's own plan)
    result = miprun.prune(str(STORIES), ids, num_remove=2, out_dir=tmp_path / "o", offload=True, progress=False,
                          plots=False, verify=0)
    assert result.plan.removed == gold["pruned_blocks"]
    assert _same([[float(v) for v in row] for row in result.table.values], gold["table"])
    assert weights_digest(tmp_path / "o") == gold["weights_sha256"]
