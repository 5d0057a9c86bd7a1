"""Checkpoint headers: truncated files and tensor names checked against a model skeleton."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from support import STORIES, requires_stories

from miprun.models.checkpoint import Checkpoint, read_header
from miprun.models.integrity import check_model_tensors


def _skeleton(**changes):
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(STORIES)
    for k, v in changes.items():
        setattr(config, k, v)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@requires_stories
def test_names_match_the_model_config_describes():
    check_model_tensors(Checkpoint(STORIES), _skeleton())  # lm_head is tied: not missing


@requires_stories
def test_missing_and_unexpected_tensors_are_named():
    with pytest.raises(ValueError, match=r"config\.json says 6 blocks but the weights hold 5 \(model\.layers\.5\.\* "
                                         r"missing\); missing tensors \(9: model\.layers\.5\..*, \.\.\.\)"):
        check_model_tensors(Checkpoint(STORIES), _skeleton(num_hidden_layers=6))
    with pytest.raises(ValueError, match=r"config\.json says 4 blocks but the weights hold 5 \(model\.layers\.4\.\* "
                                         r"not read\); unexpected tensors \(9: model\.layers\.4\."):
        check_model_tensors(Checkpoint(STORIES), _skeleton(num_hidden_layers=4))
    with pytest.raises(ValueError, match=r"missing tensors \(1: lm_head\.weight\)"):
        check_model_tensors(Checkpoint(STORIES), _skeleton(tie_word_embeddings=False))


@requires_stories
def test_a_truncated_file_is_named_by_the_header_reader(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(STORIES, folder)
    weights = folder / "model.safetensors"
    full = weights.stat().st_size
    (length,) = __import__("struct").unpack("<Q", weights.read_bytes()[:8])
    os.truncate(weights, full // 2)
    expected = (rf"{weights} is truncated: its header promises {full:,} bytes, the file has {full // 2:,}; "
                rf"re-download or re-save it")
    with pytest.raises(ValueError, match=expected):
        read_header(weights)
    with pytest.raises(ValueError, match="is truncated"):
        Checkpoint(folder)


def test_garbage_headers_are_named(tmp_path):
    f = tmp_path / "x.safetensors"
    f.write_bytes((10 ** 15).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="truncated or corrupt: its header length says"):
        read_header(f)
    body = b"not json"
    f.write_bytes(len(body).to_bytes(8, "little") + body)
    with pytest.raises(ValueError, match="is corrupt: its header is not valid JSON"):
        read_header(f)
    body = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    f.write_bytes(len(body).to_bytes(8, "little") + body + bytes(8))
    assert read_header(f)["w"]["shape"] == [2]
