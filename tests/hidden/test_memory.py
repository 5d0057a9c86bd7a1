"""Checkpoint headers, memory estimates and the offload="auto" decision."""

from __future__ import annotations

import json

import pytest
import torch

from miprun.hidden.memory import OffloadEstimate, PreflightError, check_fits, should_offload
from miprun.hidden.runner import iter_hidden_states
from miprun.hidden.stream import prepare_offload, resolve_offload
from miprun.models.checkpoint import Checkpoint, read_header
from tiny_models import calibration_ids, save_sharded, tiny_model


def test_header_sizes_match_the_tensors(tmp_path):
    model = tiny_model("llama", preset="stream", dtype=torch.bfloat16)
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
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
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


def real_bytes(module) -> int:
    """Bytes of the parameters of ``module`` that hold memory (not meta placeholders)."""
    return sum(p.numel() * p.element_size() for p in module.parameters() if not p.is_meta)


def test_estimate_equals_the_tensors_a_streaming_run_holds(tmp_path):
    # Measured, not recomputed: the bytes of the head and block tensors that are real while
    # the run is at that point, and of the states it yields.
    model = tiny_model("llama", preset="stream", num_blocks=4)
    folder = save_sharded(model, tmp_path / "m")
    source = prepare_offload(folder, n_samples=6, seq_len=10, batch_size=4, dtype=torch.float32, device="cpu",
                             window_bytes=12345)
    held = {"head": [], "block": []}
    enter_block, leave_capture = source.enter_block, source.leave_capture

    def on_leave_capture():
        held["head"].append(real_bytes(source.model))
        leave_capture()

    def on_enter_block(i):
        enter_block(i)
        held["block"].append(real_bytes(source.model))

    source.leave_capture, source.enter_block = on_leave_capture, on_enter_block
    states = [h.nbytes for _, h in iter_hidden_states(source, calibration_ids(6, 10), batch_size=4, progress=False)]
    est = source.estimate
    assert held["head"] == [est.head_bytes]  # embedding + final norm, not lm_head
    assert est.block_bytes == max(held["block"])
    assert est.state_bytes == max(states)
    assert est.window_bytes == 12345


def test_estimate_of_a_tiny_llama_by_hand(tmp_path):
    # hidden 32, 2 heads of 16, 1 kv head, intermediate 48, vocab 96; float32, 6 x 10 tokens, batches of 4
    folder = save_sharded(tiny_model("llama", preset="stream", num_blocks=4), tmp_path / "m")
    est = prepare_offload(folder, n_samples=6, seq_len=10, batch_size=4, dtype=torch.float32, device="cpu",
                          window_bytes=1000).estimate
    q_o, k_v, mlp, norms = 2 * 32 * 32, 2 * 32 * 16, 3 * 32 * 48, 2 * 32
    assert est.block_bytes == 4 * (q_o + k_v + mlp + norms) == 30976
    assert est.head_bytes == 4 * (96 * 32 + 32) == 12416
    assert est.state_bytes == 4 * 6 * 10 * 32 == 7680
    mlp_activations = 4 * 10 * (4 * 32 + 3 * 48) * 4  # batch x seq x (4 hidden + 3 intermediate) x float32
    attention_scores = 4 * 2 * 10 * 10 * 4  # batch x heads x seq x seq x float32 (eager attention)
    assert est.batch_bytes == mlp_activations + attention_scores == 46720
    # running a block (weights, input and output state, one batch, the window) is the larger peak
    assert est.peak_bytes == 30976 + 2 * 7680 + 46720 + 1000 == 94056
    # the same width twice as deep plans the same peak
    deeper = save_sharded(tiny_model("llama", preset="stream", num_blocks=8), tmp_path / "deep")
    assert prepare_offload(deeper, n_samples=6, seq_len=10, batch_size=4, dtype=torch.float32, device="cpu",
                           window_bytes=1000).estimate.peak_bytes == 94056


def test_check_fits_uses_the_usable_fraction():
    est = OffloadEstimate(block_bytes=900, head_bytes=10, state_bytes=0, batch_bytes=0)
    check_fits(est, torch.device("cpu"), available=1000)  # 900 <= 0.9 * 1000
    with pytest.raises(PreflightError, match="only 0.00 GiB is free"):
        check_fits(est, torch.device("cpu"), available=999)


def test_should_offload_compares_the_weights_with_free_memory(tmp_path):
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
    ckpt = Checkpoint(folder)
    weights = ckpt.total_bytes()
    assert should_offload(ckpt, torch.device("cpu"), available=weights) is True
    assert should_offload(ckpt, torch.device("cpu"), available=10 * weights) is False
    assert should_offload(ckpt, torch.device("cpu"), available=10 * weights, activation_bytes=10 * weights) is True
    # In bfloat16 the weights take half the bytes.
    assert should_offload(ckpt, torch.device("cpu"), torch.bfloat16, available=int(weights / 0.9 * 0.6)) is False


def test_resolve_offload_auto(tmp_path):
    model = tiny_model("llama", preset="stream")
    folder = save_sharded(model, tmp_path / "m")
    weights = Checkpoint(folder).total_bytes()
    assert resolve_offload(True, model) is True and resolve_offload(False, folder) is False
    assert resolve_offload("auto", folder, device="cpu", n_samples=2, seq_len=8, available_bytes=weights) is True
    assert resolve_offload("auto", folder, device="cpu", n_samples=2, seq_len=8,
                           available_bytes=100 * weights) is False
    assert resolve_offload("auto", model, device="cpu", available_bytes=1) is False  # a loaded model stays loaded
    with pytest.raises(ValueError, match="'auto'"):
        resolve_offload("sometimes", folder)
