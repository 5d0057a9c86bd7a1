"""Pruned checkpoints written shard by shard: equal to the in-memory surgery, loadable, atomic."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from miprun.output import shards
from miprun.models.checkpoint import Checkpoint
from miprun.output.shards import write_pruned_checkpoint
from miprun.output.surgery import remove_blocks
from support import STORIES, record_checkpoint_reads, requires_stories
from tiny_models import save_sharded, tiny_model


def _folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("model_type, removed", [("llama", [1, 3]), ("gemma3_text", [0, 4]), ("gpt2", [2]),
                                                 ("opt", [1, 2, 4])])
def test_sharded_write_equals_in_memory_surgery(tmp_path, model_type, removed):
    src = save_sharded(tiny_model(model_type, preset="stream"), tmp_path / "src")
    before = _folder_digest(src)
    out = write_pruned_checkpoint(src, removed, tmp_path / "out", report={"pruned_blocks": removed})

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    expected = remove_blocks(AutoModelForCausalLM.from_pretrained(src), removed)
    _assert_same_tensors(reloaded.state_dict(), expected.state_dict())
    kept = [i for i in range(5) if i not in removed]
    assert reloaded.config.num_hidden_layers == 5 - len(removed)
    original = AutoConfig.from_pretrained(src)
    if getattr(original, "layer_types", None):
        assert reloaded.config.layer_types == [original.layer_types[i] for i in kept]

    # The index lists every tensor once, in files that exist, with the right total size.
    index = json.loads((out / "model.safetensors.index.json").read_text())
    ckpt = Checkpoint(out)
    assert set(index["weight_map"]) == set(ckpt.tensors)
    assert index["metadata"]["total_size"] == ckpt.total_bytes()
    if "total_parameters" in index["metadata"]:
        assert index["metadata"]["total_parameters"] == sum(t.numel for t in ckpt.tensors.values())
    assert json.loads((out / "report.json").read_text()) == {"pruned_blocks": removed}
    assert _folder_digest(src) == before  # the input is never written to


def test_single_file_checkpoint_stays_single_file(tmp_path):
    src = tmp_path / "src"
    tiny_model("llama", preset="stream").save_pretrained(src)  # one model.safetensors, no index
    out = write_pruned_checkpoint(src, [4], tmp_path / "out")
    assert (out / "model.safetensors").exists() and not (out / "model.safetensors.index.json").exists()
    expected = remove_blocks(AutoModelForCausalLM.from_pretrained(src), [4])
    _assert_same_tensors(AutoModelForCausalLM.from_pretrained(out).state_dict(), expected.state_dict())


@requires_stories
def test_stories_pruned_checkpoint_has_tokenizer_and_generates(tmp_path):
    from transformers import AutoTokenizer

    out = write_pruned_checkpoint(STORIES, [1, 2], tmp_path / "out", report={"pruned_blocks": [1, 2]})
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert (out / name).read_bytes() == (STORIES / name).read_bytes(), name
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    expected = remove_blocks(AutoModelForCausalLM.from_pretrained(STORIES), [1, 2])
    _assert_same_tensors(model.state_dict(), expected.state_dict())
    ids = tok("Once upon a time", return_tensors="pt").input_ids
    gen = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert gen.shape == (1, ids.shape[1] + 4)


def test_one_input_shard_in_memory_at_a_time(tmp_path, monkeypatch):
    src = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "src")
    ckpt = Checkpoint(src)
    reads = record_checkpoint_reads(monkeypatch)
    written = []
    real_save = shards.save_file
    monkeypatch.setattr(shards, "save_file", lambda t, path, **kw: (written.append(len(t)), real_save(t, path, **kw)))
    write_pruned_checkpoint(src, [2], tmp_path / "out")
    assert len(reads) == len(written) > 3
    for names in reads:
        assert len({ckpt.tensors[n].file for n in names}) == 1  # each read is within one shard
    assert not any(n.startswith("model.layers.2.") for names in reads for n in names)  # removed: never read


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path):
    src = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        write_pruned_checkpoint(src, [1], out)
    with pytest.raises(ValueError, match="not an earlier miprun output"):
        write_pruned_checkpoint(src, [1], out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "report.json").write_text('{"format_version": 1, "pruned_blocks": [0]}')  # now an earlier output
    write_pruned_checkpoint(src, [1], out, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4


def test_failure_midway_leaves_no_output(tmp_path, monkeypatch):
    src = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "src")
    calls = []
    real_save = shards.save_file

    def failing_save(tensors, path, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_save(tensors, path, **kw)

    monkeypatch.setattr(shards, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_pruned_checkpoint(src, [1], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no temporary folder


def test_output_inside_the_input_is_refused(tmp_path):
    src = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "src")
    with pytest.raises(ValueError, match="input model folder"):
        write_pruned_checkpoint(src, [1], src / "pruned")


@pytest.mark.parametrize("removed, message", [([5], "outside 0..4"), ([1, 1], "duplicates"),
                                              ([0, 1, 2, 3, 4], "at least one block"), (["1"], "integer")])
def test_bad_block_indices_are_refused_before_writing(tmp_path, removed, message):
    src = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "src")
    with pytest.raises(ValueError, match=message):
        write_pruned_checkpoint(src, removed, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_shard_is_refused(tmp_path):
    src = save_sharded(tiny_model("llama", preset="stream"), tmp_path / "src")
    victim = sorted(src.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        write_pruned_checkpoint(src, [1], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_base_model_checkpoint_keys_are_renamed(tmp_path):
    # Checkpoints saved from a base model (keys "layers.N..." without "model.") are renamed too.
    from safetensors.torch import save_file

    model = tiny_model("llama", preset="stream")
    src = tmp_path / "src"
    model.save_pretrained(src)
    base = {k[len("model."):]: v.contiguous() for k, v in model.state_dict().items() if k.startswith("model.")}
    (src / "model.safetensors").unlink()
    save_file(base, src / "model.safetensors", metadata={"format": "pt"})
    out = write_pruned_checkpoint(src, [0], tmp_path / "out")
    names = set(Checkpoint(out).tensors)
    assert "layers.3.mlp.up_proj.weight" in names and "layers.4.mlp.up_proj.weight" not in names
    assert torch.equal(Checkpoint(out).load(["layers.0.mlp.up_proj.weight"])["layers.0.mlp.up_proj.weight"],
                       base["layers.1.mlp.up_proj.weight"])
    shutil.rmtree(out)
