"""The checkpoint check: good checkpoints of every family pass, damaged files and index entries are named.

The command-level tests (tests/cli/test_broken_checkpoints.py) run it through every command
and placement; here it is held to the formats themselves: safetensors headers whose byte
ranges disagree with their dtypes and shapes, GGUF files cut short or with blocks missing,
and transformers' loading report.
"""

from __future__ import annotations

import importlib.util
import json
import struct

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from tiny_models import ALL_FAMILIES, save_sharded, tiny_model

from miprun.hidden.device_map import load_with_device_map
from miprun.hidden.in_memory import load_in_memory
from miprun.models.checkpoint import BrokenCheckpointError, read_header
from miprun.models.integrity import check_checkpoint, check_gguf_file, check_loading_info
from miprun.models.loading import load_config

needs_gguf = pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the gguf package is not installed")


# --- no false alarm: every family, tied or not, one file or shards ---

@pytest.mark.parametrize("tie", [None, True, False], ids=["default-tie", "tied", "untied"])
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_every_family_saved_by_transformers_passes(tmp_path, family, tie):
    """The names transformers renames on save (GPT-NeoX's head, Mixtral's experts) and tied heads are not errors."""
    model = tiny_model(family, tie=tie)
    folder = save_sharded(model, tmp_path / "m", max_shard_size="20KB" if tie is None else "10MB")
    config = load_config(folder)
    check_checkpoint(folder, config)
    loaded = load_in_memory(folder, config)  # checks transformers' loading report too
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    load_with_device_map(folder, device_map={"": "cpu"}, config=config)


def test_a_tied_head_may_be_stored_too_but_in_its_shape(tmp_path):
    folder = save_sharded(tiny_model("llama", tie=True), tmp_path / "m", max_shard_size="10MB")
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, weights, metadata={"format": "pt"})
    config = load_config(folder)
    check_checkpoint(folder, config)
    load_in_memory(folder, config)
    tensors["lm_head.weight"] = tensors["lm_head.weight"][:5]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(BrokenCheckpointError, match=r"lm_head\.weight is \(5, 32\) in the weights, \(96, 32\) by"):
        check_checkpoint(folder, config)


# --- safetensors headers ---

def _write(path, entries: dict, data_bytes: int):
    body = json.dumps(entries).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + bytes(data_bytes))


@pytest.mark.parametrize("entries,data,phrase", [
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8, r"'w' is F32 of shape \[3\] \(12 bytes\) but "
                                                                         r"its header gives it 8 bytes"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, 20, r"'b' starts at byte 12 of the data, where "
                                                                          r"the one before it ends at 8"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8, r"starts at byte 4 .* ends at 8"),
    ({"w": {"dtype": "F32", "shape": [2]}}, 8, r"'w' has no valid dtype, shape and data_offsets"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, 8, r"'w' has shape \[-2\]"),
])
def test_header_entries_that_disagree_with_their_bytes_are_corrupt(tmp_path, entries, data, phrase):
    f = tmp_path / "x.safetensors"
    _write(f, entries, data)
    with pytest.raises(BrokenCheckpointError, match=rf"x\.safetensors is corrupt: .*{phrase}"):
        read_header(f)


def test_a_header_that_fits_its_bytes_is_read(tmp_path):
    f = tmp_path / "x.safetensors"
    _write(f, {"__metadata__": {"format": "pt"}, "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
               "b": {"dtype": "F32", "shape": [0], "data_offsets": [12, 12]},
               "c": {"dtype": "I64", "shape": [1], "data_offsets": [12, 20]}}, 20)
    assert set(read_header(f)) == {"__metadata__", "a", "b", "c"}


# --- GGUF ---

def _gguf(path, *, blocks: int, block_count: int | None = None):
    """A small llama GGUF: the embedding and one norm per block, ``block_count`` in its metadata."""
    from gguf import GGUFWriter
    w = GGUFWriter(path, arch="llama")
    w.add_block_count(blocks if block_count is None else block_count)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((8, 16), dtype=np.float32))
    for i in range(blocks):
        w.add_tensor(f"blk.{i}.attn_norm.weight", rng.standard_normal(16, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@needs_gguf
def test_an_intact_gguf_passes(tmp_path):
    check_gguf_file(_gguf(tmp_path / "m.gguf", blocks=3))


@needs_gguf
@pytest.mark.parametrize("where", ["magic", "metadata", "tensor table", "first tensor", "last byte"])
def test_a_truncated_gguf_is_refused(tmp_path, where):
    f = _gguf(tmp_path / "m.gguf", blocks=3)
    size = f.stat().st_size
    cut = {"magic": 3, "metadata": 40, "tensor table": 150, "first tensor": size - 3 * 64 - 100,
           "last byte": size - 1}[where]
    f.write_bytes(f.read_bytes()[:cut])
    with pytest.raises(BrokenCheckpointError, match=r"m\.gguf is truncated.*re-download it"):
        check_gguf_file(f)


@needs_gguf
def test_a_gguf_longer_than_its_tensors_is_refused(tmp_path):
    f = _gguf(tmp_path / "m.gguf", blocks=3)
    with open(f, "ab") as fh:
        fh.write(bytes(64))
    with pytest.raises(BrokenCheckpointError, match=r"m\.gguf is longer than its header says"):
        check_gguf_file(f)


@needs_gguf
@pytest.mark.parametrize("blocks,count,phrase", [
    (2, 3, r"counts 3 blocks but its tensors hold 2 \(blk\.2\.\* missing\)"),
    (3, 2, r"counts 2 blocks but its tensors hold 3 \(blk\.2\.\* not read\)")])
def test_a_gguf_whose_tensors_do_not_hold_its_blocks_is_refused(tmp_path, blocks, count, phrase):
    with pytest.raises(BrokenCheckpointError, match=phrase):
        check_gguf_file(_gguf(tmp_path / "m.gguf", blocks=blocks, block_count=count))


# --- transformers' loading report ---

@pytest.mark.parametrize("info,phrase", [
    ({"missing_keys": {"model.layers.3.mlp.up_proj.weight"}}, r"missing tensors \(1: model\.layers\.3\.mlp"),
    ({"unexpected_keys": {"model.layers.9.x"}}, r"unexpected tensors \(1: model\.layers\.9\.x\)"),
    ({"mismatched_keys": [("model.norm.weight", (8,), (16,))]},
     r"model\.norm\.weight is \(8,\) in the weights, \(16,\) by config\.json"),
    ({"error_msgs": ["size mismatch for\n lm_head"]}, r"transformers could not load some weights \(size mismatch for "
                                                      r"lm_head\)"),
])
def test_every_entry_of_the_loading_report_is_an_error(info, phrase):
    with pytest.raises(BrokenCheckpointError, match=phrase):
        check_loading_info(info, "somewhere", "LlamaForCausalLM")
    check_loading_info({"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []},
                       "somewhere", "LlamaForCausalLM")
