"""Damaged copies of a checkpoint, and the command run on them, for the broken-checkpoint tests.

A *damage* changes a model folder in place the way a user's copy goes wrong: a file cut
short (:func:`truncate`), bytes appended, config.json describing other weights
(:func:`edit_config`), a tensor dropped, added or reshaped in a rewritten safetensors file
(:func:`rewrite_tensors`), an index that disagrees with its shards. :func:`run_command`
runs ``miprun`` in-process on a model with one command and placement, and
:func:`assert_refused` holds the outcome to the rule: exit 2, one line on stderr, no
traceback, the phrases expected in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tiny_models import random_text, tiny_model, word_tokenizer

from miprun.cli.main import main

FAST = ["--n-samples", "4", "--seq-len", "16"]

#: (command, placement) pairs: eval and compare have no --offload.
COMMANDS = [("prune", "in memory"), ("prune", "offload"), ("prune", "device map"),
            ("score", "in memory"), ("score", "offload"), ("score", "device map"),
            ("eval", "in memory"), ("eval", "device map"),
            ("compare", "in memory"), ("compare", "device map")]
PLACEMENT_FLAGS = {"in memory": [], "offload": ["--offload"], "device map": ["--device-map", "auto"]}


# --- the model ---

def save_tiny(folder: Path, *, sharded: bool) -> Path:
    """The tiny Llama of the eval preset (4 blocks, hidden 32, 2 heads and 2 key/value heads of 16,
    MLP 64, untied head) with its word tokenizer: one ``model.safetensors``, or shards and an index."""
    tok = word_tokenizer()
    model = tiny_model("llama", preset="eval", vocab=len(tok), max_positions=64, seed=3)
    model.save_pretrained(folder, max_shard_size="20KB" if sharded else "100MB")
    tok.save_pretrained(folder)
    return Path(folder)


def write_calibration(path: Path) -> Path:
    path.write_text(random_text(1500, seed=1))
    return path


# --- damages ---

def header_length(path: Path) -> int:
    """The JSON header's length, from the 8-byte prefix of a safetensors file."""
    with open(path, "rb") as fh:
        return struct.unpack("<Q", fh.read(8))[0]


def truncation_offsets(path: Path) -> dict[str, int]:
    """Where a safetensors file can be cut: in the length prefix, the JSON header, the tensor data, the last byte."""
    size, length = path.stat().st_size, header_length(path)
    return {"empty": 0, "inside the length": 5, "inside the header": 8 + length // 2, "after the header": 8 + length,
            "inside the data": 8 + length + (size - 8 - length) // 2, "last byte": size - 1}


def truncate(path: Path, size: int) -> None:
    os.truncate(path, size)


def append_bytes(path: Path, n: int) -> None:
    with open(path, "ab") as fh:
        fh.write(b"\0" * n)


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def rewrite_tensors(path: Path, *, drop: str | None = None, add: tuple[str, tuple] | None = None,
                    reshape: tuple[str, tuple] | None = None) -> None:
    """Save ``path`` again with one tensor dropped, one added (name, shape) or one given another shape."""
    tensors = load_file(path)
    metadata = _metadata(path)
    if drop is not None:
        del tensors[drop]
    if add is not None:
        tensors[add[0]] = torch.zeros(add[1])
    if reshape is not None:
        tensors[reshape[0]] = torch.zeros(reshape[1], dtype=tensors[reshape[0]].dtype)
    save_file(tensors, path, metadata=metadata)


def _metadata(path: Path) -> dict:
    with open(path, "rb") as fh:
        length = struct.unpack("<Q", fh.read(8))[0]
        return json.loads(fh.read(length)).get("__metadata__", {})


# --- inputs unchanged, nothing written ---

def digest(path: Path) -> str:
    """Hash of every file's relative path and bytes under ``path`` (or of the file)."""
    h = hashlib.sha256()
    for p in sorted([path, *path.rglob("*")] if path.is_dir() else [path]):
        h.update(str(p.relative_to(path.parent)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- the command ---

def command_argv(command: str, placement: str, model: Path, calib: Path, out: Path) -> list[str]:
    """``miprun COMMAND MODEL ...`` with small settings, writing to ``out`` (a folder; a JSON file for score, eval)."""
    flags = PLACEMENT_FLAGS[placement]
    if command == "prune":
        return ["prune", model, "--calib", calib, "--num-remove", "1", "--out", out, "--no-plots", "--quiet", *FAST,
                *flags]
    if command == "score":
        return ["score", model, "--calib", calib, "--out", out, "--quiet", *FAST, *flags]
    if command == "eval":
        return ["eval", model, "--ppl", calib, "--seq-len", "16", "--json", out, *flags]
    if command == "compare":
        return ["compare", model, "--num-remove", "1", "--calib", calib, "--n-samples", "4", "--seq-len", "16",
                "--calib-seq-len", "16", "--oracle-limit", "0", "--estimators", "hist:pooled", "--out", out,
                "--quiet", *flags]
    raise AssertionError(command)


def run_command(argv) -> tuple[int, str, str]:
    """``miprun`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_refused(code: int, err: str, *phrases: str) -> str:
    """Exit 2 with exactly one line on stderr, no traceback, holding every phrase; returns the line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]
