"""The loss oracle: bypassing blocks in place gives the loss of the model with them removed."""

from __future__ import annotations

import copy

import pytest
import torch

from miprun.evaluate.calibration_loss import CalibrationLoss, bypassed, mean_next_token_loss
from miprun.models.blocks import find_blocks
from miprun.output.surgery import remove_blocks
from tiny_models import calibration_ids, tiny_model

torch.set_num_threads(2)

# gemma3_text: alternating sliding/full blocks, so a bypass must keep each block's own attention type
FAMILIES = ("llama", "gpt2", "gemma3_text")


def _reference(model, removed, ids) -> float:
    pruned = remove_blocks(copy.deepcopy(model), list(removed))
    return mean_next_token_loss(pruned, ids, batch_size=3)[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("removed", [(), (0,), (2,), (1, 2), (0, 3), (0, 1, 3)])
def test_bypass_equals_removal_float64(family, removed):
    preset = "stream" if family == "gemma3_text" else "standard"
    model = tiny_model(family, preset=preset, dtype=torch.float64)
    ids = calibration_ids(n=5, seq_len=12)
    oracle = CalibrationLoss(model, ids, batch_size=2)  # batches of 2, 2, 1 windows
    got = oracle(removed)
    assert got == pytest.approx(_reference(model, removed, ids), rel=1e-12, abs=1e-12)
    # restored: the full model's loss and blocks are those of before
    before = [id(b) for b in find_blocks(model)[0]]
    assert oracle(()) == pytest.approx(mean_next_token_loss(model, ids)[0], rel=1e-12)
    assert [id(b) for b in find_blocks(model)[0]] == before


def test_cache_counts_and_order():
    model = tiny_model("llama", dtype=torch.float64)
    ids = calibration_ids(n=4, seq_len=10)
    oracle = CalibrationLoss(model, ids, batch_size=3)
    a = oracle((2, 0))
    assert oracle([0, 2]) == a and oracle.passes == 1 and oracle.calls == 2  # 4 windows in batches of 3
    oracle((1,))
    assert oracle.passes == 2 and set(oracle.cache) == {(0, 2), (1,)}
    summary = oracle.summary()
    assert summary["forward_passes"] == 2 and summary["windows"] == 4 and summary["seconds"] >= 0


def test_restored_on_error_and_bad_blocks():
    model = tiny_model("llama")
    blocks = find_blocks(model)[0]
    before = list(blocks)
    oracle = CalibrationLoss(model, torch.full((2, 8), 10 ** 6, dtype=torch.long))  # ids past the vocabulary
    with pytest.raises(IndexError):
        oracle((1,))
    assert list(blocks) == before and model.training is False
    with pytest.raises(ValueError, match="outside"):
        oracle((9,))
    with pytest.raises(ValueError, match="at least one must stay"):
        oracle(tuple(range(len(blocks))))
    assert list(blocks) == before
    with bypassed(model, [0]):
        assert type(blocks[0]).__name__ == "BypassedBlock"
    assert list(blocks) == before


def test_float32_close_to_removal():
    model = tiny_model("llama")
    ids = calibration_ids(n=3, seq_len=12)
    got = CalibrationLoss(model, ids)((1, 3))
    assert got == pytest.approx(_reference(model, (1, 3), ids), rel=1e-5)
