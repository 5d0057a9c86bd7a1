"""States of a model dispatched with an accelerate device map (CPU and disk offload here)."""

from __future__ import annotations

import pytest
import torch

from miprun.hidden.device_map import DeviceMapSource, execution_device
from miprun.hidden.runner import iter_hidden_states
from miprun.hidden.sources import open_source
from tiny_models import calibration_ids, save_sharded, tiny_model

# Blocks 1 and 3 live on disk and are paged in by accelerate's hooks for their turn; the rest on the CPU.
SPLIT_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
             "model.layers.1": "disk", "model.layers.2": "cpu", "model.layers.3": "disk",
             "model.layers.4": "cpu", "model.norm": "cpu", "lm_head": "cpu"}


@pytest.mark.parametrize("device_map", ["auto", "sequential", SPLIT_MAP], ids=["auto", "sequential", "cpu+disk"])
def test_device_map_states_equal_in_memory(tmp_path, device_map):
    model = tiny_model("llama", preset="stream")
    folder = save_sharded(model, tmp_path / "m")
    ids = calibration_ids(5, 12, seed=5)
    ref = list(iter_hidden_states(model, ids, batch_size=2, progress=False))
    source = open_source(folder, device_map=device_map, offload_folder=tmp_path / "offload",
                         attn_implementation="eager")
    assert isinstance(source, DeviceMapSource)
    if isinstance(device_map, dict):
        # The disk blocks hold no weights between calls; they compute on the CPU.
        assert all(p.is_meta for p in source.blocks[1].parameters())
        assert execution_device(source.blocks[1]) == torch.device("cpu")
    got = list(iter_hidden_states(source, ids, batch_size=2, progress=False))
    assert [b for b, _ in got] == list(range(6))
    for (b, r), (_, g) in zip(ref, got):
        assert torch.equal(g, r), f"state {b} differs by {(g - r).abs().max().item()}"


def test_disk_blocks_without_an_offload_folder_use_a_temporary_one(tmp_path):
    model = tiny_model("llama", preset="stream")
    folder = save_sharded(model, tmp_path / "m")
    ids = calibration_ids(3, 8, seed=6)
    ref = list(iter_hidden_states(model, ids, batch_size=2, progress=False))
    source = open_source(folder, device_map=SPLIT_MAP, attn_implementation="eager")
    got = list(iter_hidden_states(source, ids, batch_size=2, progress=False))
    for (b, r), (_, g) in zip(ref, got):
        assert torch.equal(g, r), b
