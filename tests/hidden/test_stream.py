"""Streaming (offload) hidden states: identical to the in-memory path, one block resident, checks up front."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from miprun.hidden import runner
from miprun.hidden.memory import PreflightError
from miprun.hidden.runner import iter_hidden_states
from miprun.hidden.sources import open_source
from miprun.hidden.stream import StreamedSource, prepare_offload
from miprun.models.checkpoint import Checkpoint
from tiny_models import STREAM_FAMILIES, calibration_ids, save_sharded, tiny_model
from support import STORIES, record_checkpoint_reads, requires_stories


def streamed(folder, ids, *, batch_size=2, **kw):
    """The states of ``folder`` streamed on the CPU (eager attention, as the in-memory reference)."""
    kw.setdefault("attn_implementation", "eager")
    source = open_source(folder, offload=True, device="cpu", n_samples=ids.shape[0], seq_len=ids.shape[1],
                         batch_size=batch_size, **kw)
    assert isinstance(source, StreamedSource)
    return list(iter_hidden_states(source, ids, batch_size=batch_size, progress=False))


@pytest.mark.parametrize("model_type", STREAM_FAMILIES)
def test_offload_states_equal_in_memory(tmp_path, model_type):
    # Sharded into many small files so that blocks straddle shards; 5 samples in batches of 2
    # leave a short last batch. Same weights, same ops in the same order: exact equality.
    model = tiny_model(model_type, preset="stream")
    folder = save_sharded(model, tmp_path / "m")
    assert len(list(folder.glob("*.safetensors"))) > 3
    ids = calibration_ids(5, 12)
    ref = list(iter_hidden_states(model, ids, batch_size=2, progress=False))
    got = streamed(folder, ids)
    assert [b for b, _ in got] == list(range(model.config.num_hidden_layers + 1))
    for (b, r), (_, g) in zip(ref, got):
        assert g.shape == r.shape == (5, 12, r.shape[-1])
        assert torch.equal(g, r), f"{model_type}: state {b} differs by {(g - r).abs().max().item()}"


def test_offload_bf16_checkpoint_in_its_dtype_and_upcast(tmp_path):
    # Default dtype: the checkpoint's (bf16). dtype="float32" upcasts every weight as it is
    # read, as from_pretrained(dtype=float32) does at load. Both exact.
    from transformers import AutoModelForCausalLM

    folder = save_sharded(tiny_model("llama", preset="stream", dtype=torch.bfloat16), tmp_path / "m")
    ids = calibration_ids(4, 10, seed=1)
    for dtype in (None, torch.float32):
        loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.bfloat16,
                                                      attn_implementation="eager").eval()
        ref = list(iter_hidden_states(loaded, ids, batch_size=3, progress=False))
        got = streamed(folder, ids, dtype=dtype, batch_size=3)
        for (b, r), (_, g) in zip(ref, got):
            assert g.dtype == (dtype or torch.bfloat16)
            assert torch.equal(g, r), f"dtype {dtype}: state {b}"


@requires_stories
def test_offload_stories_matches_hf_hidden_states():
    # An independent reference: HF's own output_hidden_states (h_0..h_{T-1}) and the input of
    # the final norm (h_T, which output_hidden_states replaces by the normed state).
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    ids = calibration_ids(3, 24, seed=3) % model.config.vocab_size
    captured = {}
    handle = model.model.norm.register_forward_pre_hook(lambda m, a: captured.setdefault("h_T", a[0]))
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True, use_cache=False).hidden_states
    handle.remove()
    got = dict(streamed(STORIES, ids, batch_size=3, attn_implementation=None))
    num_blocks = model.config.num_hidden_layers
    assert sorted(got) == list(range(num_blocks + 1))
    for b in range(num_blocks):
        torch.testing.assert_close(got[b], hidden[b], rtol=0, atol=0)
    torch.testing.assert_close(got[num_blocks], captured["h_T"], rtol=0, atol=0)


def test_only_one_block_is_resident(tmp_path, monkeypatch):
    model = tiny_model("llama", preset="stream", num_blocks=6)
    folder = save_sharded(model, tmp_path / "m")
    reads = record_checkpoint_reads(monkeypatch)
    source = prepare_offload(folder, n_samples=5, seq_len=12, batch_size=2, device="cpu")
    real_run = runner.run_block

    def watching_run(block, h, calls):
        resident = [i for i, b in enumerate(source.blocks) if any(not p.is_meta for p in b.parameters())]
        assert resident == [i for i, b in enumerate(source.blocks) if b is block], resident
        return real_run(block, h, calls)

    monkeypatch.setattr(runner, "run_block", watching_run)
    for b, _h in iter_hidden_states(source, calibration_ids(), batch_size=2, progress=False):
        # Between states nothing but computed buffers is real: the embedding and every block are freed.
        real = [n for n, p in source.model.named_parameters() if not p.is_meta]
        assert real == [], f"after state {b}: {real}"
    # One read for the head (no block tensors), then exactly block i's tensors for block i.
    assert not any(".layers." in n for n in reads[0])
    for i, names in enumerate(reads[1:]):
        assert names and all(n.startswith(f"model.layers.{i}.") for n in names), (i, names[:3])
    assert len(reads) == 1 + 6
    assert source.timings["blocks"] == 6 and source.timings["load_s"] > 0


def test_a_source_runs_twice(tmp_path):
    folder = save_sharded(tiny_model("gpt2", preset="stream"), tmp_path / "m")
    ids = calibration_ids(3, 8, seed=2)
    source = prepare_offload(folder, n_samples=3, seq_len=8, batch_size=2, device="cpu")
    first = list(iter_hidden_states(source, ids, batch_size=2, progress=False))
    again = list(iter_hidden_states(source, ids, batch_size=2, progress=False))
    assert len(first) == len(again) == source.num_blocks + 1
    for (b, x), (_, y) in zip(first, again):
        assert torch.equal(x, y), b


# ----------------------------------------------------------------------------- pre-flight checks
@pytest.fixture
def no_weight_reads(monkeypatch):
    """Fail the test if any weight is read: every check must come before the long work."""
    def refuse(self, names, **kw):
        raise AssertionError("a weight was read before the pre-flight checks finished")
    monkeypatch.setattr(Checkpoint, "load", refuse)


def test_missing_shard_file_is_reported_before_work(tmp_path, no_weight_reads):
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[2]
    (folder / victim).unlink()
    with pytest.raises(FileNotFoundError, match=victim):
        open_source(folder, offload=True, device="cpu", n_samples=5, seq_len=12)


def test_missing_block_tensor_is_reported(tmp_path, no_weight_reads, monkeypatch):
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    victim = "model.layers.3.mlp.down_proj.weight"
    shard = folder / index["weight_map"].pop(victim)
    monkeypatch.undo()  # rewriting the shard needs a real read
    tensors = load_file(shard)
    del tensors[victim]
    save_file(tensors, shard, metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))
    monkeypatch.setattr(Checkpoint, "load", lambda *a, **k: pytest.fail("weights read before the checks"))
    with pytest.raises(ValueError, match=r"model\.layers\.3\.mlp\.down_proj\.weight"):
        open_source(folder, offload=True, device="cpu", n_samples=5, seq_len=12)


def test_index_naming_an_absent_tensor_is_reported(tmp_path, no_weight_reads):
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first_file = next(iter(index["weight_map"].values()))
    index["weight_map"]["model.layers.0.extra.weight"] = first_file
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.extra\.weight"):
        open_source(folder, offload=True, device="cpu", n_samples=5, seq_len=12)


def _with_depth(folder, dest, change: int):
    """A copy of ``folder`` whose config.json says ``change`` more (or fewer) blocks than its weights hold."""
    shutil.copytree(folder, dest)
    config = json.loads((dest / "config.json").read_text())
    key = next(k for k in ("num_hidden_layers", "n_layer") if k in config)
    config[key] += change
    (dest / "config.json").write_text(json.dumps(config))
    return dest, config[key]


# Block tensors as the checkpoint names them: "model.layers.4.mlp.down_proj.weight", "transformer.h.4.attn...".
_BLOCK = {"llama": r"model\.layers\.{}\.", "gpt2": r"h\.{}\."}


@pytest.mark.parametrize("model_type", sorted(_BLOCK))
def test_config_with_fewer_blocks_than_the_weights_is_refused(tmp_path, no_weight_reads, model_type):
    # A config that says 4 blocks over weights of 5 would score a truncated model and, once
    # pruned, write a checkpoint without the last block: refused, naming the unread tensors.
    saved = save_sharded(tiny_model(model_type, preset="stream"), tmp_path / "m")
    folder, depth = _with_depth(saved, tmp_path / "short", -1)
    assert depth == 4
    with pytest.raises(ValueError, match=r"unexpected tensors \(\d+: .*" + _BLOCK[model_type].format(4)) as err:
        open_source(folder, offload=True, device="cpu", n_samples=5, seq_len=12)
    assert "config.json says 4 blocks but the weights hold 5" in str(err.value)
    # The unmodified checkpoint opens (the refusal is about the mismatch only).
    assert open_source(saved, offload=True, device="cpu", n_samples=5, seq_len=12).num_blocks == 5


@pytest.mark.parametrize("model_type", sorted(_BLOCK))
def test_config_with_more_blocks_than_the_weights_is_refused(tmp_path, no_weight_reads, model_type):
    saved = save_sharded(tiny_model(model_type, preset="stream"), tmp_path / "m")
    folder, depth = _with_depth(saved, tmp_path / "long", +1)
    assert depth == 6
    with pytest.raises(ValueError, match=r"missing tensors \(\d+: .*" + _BLOCK[model_type].format(5)) as err:
        open_source(folder, offload=True, device="cpu", n_samples=5, seq_len=12)
    assert "config.json says 6 blocks but the weights hold 5" in str(err.value)


def test_dtype_the_device_cannot_run_is_reported(tmp_path, no_weight_reads):
    # CPU kernels do not implement float8 matmul/softmax: found by a tiny op, not a table.
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
    with pytest.raises(PreflightError, match="float8_e4m3fn"):
        open_source(folder, offload=True, dtype=torch.float8_e4m3fn, device="cpu", n_samples=5, seq_len=12)


def test_too_little_memory_is_reported_with_the_numbers(tmp_path, no_weight_reads):
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
    with pytest.raises(PreflightError, match=r"GiB.*one block.*only .* GiB is free"):
        prepare_offload(folder, n_samples=5, seq_len=12, device="cpu", available_bytes=10_000)
    # With enough memory the same plan passes and still has read no weight.
    plan = prepare_offload(folder, n_samples=5, seq_len=12, device="cpu", available_bytes=10 ** 9)
    assert plan.num_blocks == 5


def test_bad_inputs_are_refused(tmp_path):
    folder = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "m")
    source = open_source(folder, offload=True, device="cpu", n_samples=5, seq_len=12)
    with pytest.raises(ValueError, match="n_samples, seq_len"):
        iter_hidden_states(source, torch.arange(10), progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(tmp_path / "nowhere", offload=True, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        open_source(tmp_path / "empty", offload=True, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        open_source(folder, offload=True, batch_size=0, device="cpu")
