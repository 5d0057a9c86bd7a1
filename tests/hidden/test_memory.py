"""Checkpoint headers, memory estimates and the offload="auto" decision."""

from __future__ import annotations

import json

import pytest
import torch

from miprun.models.checkpoint import Checkpoint, read_header
from miprun.hidden.memory import OffloadEstimate, PreflightError, check_fits, should_offload
from miprun.hidden.stream import prepare_offload, resolve_offload
from scale_tiny import save_sharded, tiny_model


def test_header_sizes_match_the_tensors(tmp_path):
    model = tiny_model("llama", dtype=torch.bfloat16)
    folder = save_sharded(model, tmp_path / "m")
    ckpt = Checkpoint(folder)
    state = model.state_dict()
    assert set(ckpt.tensors) <= set(state)
    for name, info in ckpt.tensors.items():
        assert info.shape == tuple(state[name].shape)
        assert info.nbytes == state[name].numel() * state[name].element_size()
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert ckpt.total_bytes() == index["metadata"]["total_size"]
    assert ckpt.floating_dtype() == torch.bfloat16
    # Converted sizes: the same tensors in float32 take twice the bytes.
    names = list(ckpt.tensors)
    assert ckpt.nbytes(names, torch.float32) == 2 * ckpt.nbytes(names)


def test_truncated_shard_is_refused(tmp_path):
    folder = save_sharded(tiny_model("llama"), tmp_path / "m")
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:12])
    with pytest.raises(ValueError, match="truncated"):
        read_header(shard)
    with pytest.raises(ValueError, match="truncated"):
        Checkpoint(folder)


def test_no_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        Checkpoint(tmp_path)


def test_estimate_counts_one_block_the_states_and_the_window(tmp_path):
    model = tiny_model("llama", num_blocks=4)
    folder = save_sharded(model, tmp_path / "m")
    plan = prepare_offload(folder, n_samples=6, seq_len=10, batch_size=4, dtype=torch.float32, device="cpu",
                           window_bytes=12345)
    est = plan.estimate
    block0 = sum(p.numel() * 4 for p in model.model.layers[0].parameters())
    assert est.block_bytes == block0
    # Everything loaded before block 0: embedding and final norm (lm_head is not needed to score).
    head = sum(p.numel() * 4 for m in (model.model.embed_tokens, model.model.norm) for p in m.parameters())
    assert est.head_bytes == head
    assert est.state_bytes == 6 * 10 * model.config.hidden_size * 4
    assert est.window_bytes == 12345
    assert est.peak_bytes >= est.block_bytes + 2 * est.state_bytes + est.window_bytes
    # Independent of depth: the same width with twice the blocks plans the same peak.
    deeper = save_sharded(tiny_model("llama", num_blocks=8), tmp_path / "deep")
    plan8 = prepare_offload(deeper, n_samples=6, seq_len=10, batch_size=4, dtype=torch.float32, device="cpu",
                            window_bytes=12345)
    assert plan8.estimate.peak_bytes == est.peak_bytes


def test_check_fits_uses_the_usable_fraction():
    est = OffloadEstimate(block_bytes=900, head_bytes=10, state_bytes=0, batch_bytes=0)
    check_fits(est, torch.device("cpu"), available=1000)  # 900 <= 0.9 * 1000
    with pytest.raises(PreflightError, match="only 0.00 GiB is free"):
        check_fits(est, torch.device("cpu"), available=999)


def test_should_offload_compares_the_weights_with_free_memory(tmp_path):
    folder = save_sharded(tiny_model("llama"), tmp_path / "m")
    ckpt = Checkpoint(folder)
    weights = ckpt.total_bytes()
    assert should_offload(ckpt, torch.device("cpu"), available=weights) is True
    assert should_offload(ckpt, torch.device("cpu"), available=10 * weights) is False
    assert should_offload(ckpt, torch.device("cpu"), available=10 * weights, activation_bytes=10 * weights) is True
    # In bfloat16 the weights take half the bytes.
    assert should_offload(ckpt, torch.device("cpu"), torch.bfloat16, available=int(weights / 0.9 * 0.6)) is False


def test_resolve_offload_auto(tmp_path):
    model = tiny_model("llama")
    folder = save_sharded(model, tmp_path / "m")
    weights = Checkpoint(folder).total_bytes()
    assert resolve_offload(True, model) is True and resolve_offload(False, folder) is False
    assert resolve_offload("auto", folder, device="cpu", n_samples=2, seq_len=8, available_bytes=weights) is True
    assert resolve_offload("auto", folder, device="cpu", n_samples=2, seq_len=8,
                           available_bytes=100 * weights) is False
    assert resolve_offload("auto", model, device="cpu", available_bytes=1) is False  # a loaded model stays loaded
    with pytest.raises(ValueError, match="'auto'"):
        resolve_offload("sometimes", folder)
