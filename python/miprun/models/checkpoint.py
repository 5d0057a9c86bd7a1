"""Read a safetensors checkpoint folder without loading it: which file holds each tensor, and how big it is.

A Hugging Face checkpoint is either one ``model.safetensors`` or several shards listed by
``model.safetensors.index.json`` (``{"metadata": {"total_size": ...}, "weight_map": {name: file}}``).
Every shard starts with a little-endian ``u64`` header length and a JSON header giving each
tensor's dtype, shape and byte range, so names, shapes and sizes are known from the headers
alone, before any weight is read.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

__all__ = ["TensorInfo", "Checkpoint", "read_header", "check_tensor_names", "expected_tensor_names",
           "tensor_mismatch_error", "describe_names", "SAFETENSORS_DTYPES", "INDEX_NAME", "SINGLE_NAME"]

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

#: safetensors dtype names -> torch dtypes (the ones transformers checkpoints use).
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, read from a shard header.

    Attributes
    ----------
    file : str
        Shard file name, relative to the checkpoint folder.
    dtype : str
        safetensors dtype name (``"BF16"``, ``"F32"``, ...).
    shape : tuple of int
    nbytes : int
        Bytes on disk.
    """

    file: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def _corrupt(path, what: str) -> ValueError:
    return ValueError(f"{path} is truncated or corrupt ({what}): re-download or re-save it")


def read_header(path: Path) -> dict:
    """The JSON header of one ``.safetensors`` file (tensor entries plus ``__metadata__``).

    Raises
    ------
    ValueError
        When the file is shorter than its header says (a truncated download or copy), or
        its header is not a safetensors header.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        raw = fh.read(8)
        if len(raw) != 8:
            raise _corrupt(path, f"the file has {size} bytes, fewer than the 8 of its header length")
        (length,) = struct.unpack("<Q", raw)
        # Checked before reading: a garbage length would otherwise ask for petabytes.
        if length > size - 8:
            raise _corrupt(path, f"header says its JSON is {length} bytes, file has {size - 8} after the length")
        body = fh.read(length)
    try:
        header = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"its header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object")
    data_bytes = _data_bytes(path, header)
    if data_bytes != size - 8 - length:
        raise _corrupt(path, f"header says {data_bytes} bytes of tensors, file has {size - 8 - length}")
    return header


def _data_bytes(path, header: dict) -> int:
    """End of the last tensor's bytes, from the header's ``data_offsets``."""
    try:
        return max((int(e["data_offsets"][1]) for k, e in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise _corrupt(path, "a header entry has no valid data_offsets") from None


class Checkpoint:
    """The tensors of a safetensors checkpoint folder, indexed by name, read lazily.

    Parameters
    ----------
    model_dir : path
        Folder with ``model.safetensors`` or ``model.safetensors.index.json`` and its shards.

    Raises
    ------
    FileNotFoundError
        When the folder has neither file, or the index names a shard that is absent.
    ValueError
        When a shard's header does not list a tensor the index assigns to it.
    """

    def __init__(self, model_dir) -> None:
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"checkpoint folder {self.model_dir} does not exist")
        index_path = self.model_dir / INDEX_NAME
        if index_path.exists():
            index = json.loads(index_path.read_text())
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index_path} has no 'weight_map'; the checkpoint index is damaged")
            self.index_metadata = dict(index.get("metadata") or {})
        elif (self.model_dir / SINGLE_NAME).exists():
            weight_map = None
            self.index_metadata = {}
        else:
            raise FileNotFoundError(
                f"{self.model_dir} has neither {SINGLE_NAME} nor {INDEX_NAME}; streaming needs a "
                "safetensors checkpoint (re-save the model with save_pretrained(..., safe_serialization=True))")

        files = sorted(set(weight_map.values())) if weight_map else [SINGLE_NAME]
        missing = [f for f in files if not (self.model_dir / f).exists()]
        if missing:
            raise FileNotFoundError(
                f"checkpoint {self.model_dir} is incomplete: its index names {len(missing)} shard file(s) "
                f"that are absent: {missing[:5]}{' ...' if len(missing) > 5 else ''}; download the missing shards")

        self.files = files
        self.file_metadata: dict[str, dict] = {}
        self.tensors: dict[str, TensorInfo] = {}
        for f in files:
            header = read_header(self.model_dir / f)
            self.file_metadata[f] = dict(header.pop("__metadata__", None) or {})
            for name, entry in header.items():
                if weight_map is not None and weight_map.get(name) != f:
                    continue  # the index is authoritative when a name appears in two shards
                begin, end = entry["data_offsets"]
                self.tensors[name] = TensorInfo(f, entry["dtype"], tuple(entry["shape"]), end - begin)
        if weight_map is not None:
            absent = [n for n in weight_map if n not in self.tensors]
            if absent:
                raise ValueError(
                    f"checkpoint {self.model_dir} is damaged: {len(absent)} tensor(s) named by the index are not in "
                    f"their shard's header, e.g. {absent[:3]} (expected in {weight_map[absent[0]]})")

    # -- sizes ------------------------------------------------------------------------------

    def total_bytes(self) -> int:
        """Bytes of all tensors on disk (the index's ``total_size``)."""
        return sum(t.nbytes for t in self.tensors.values())

    def nbytes(self, names, dtype: torch.dtype | None = None) -> int:
        """Bytes of the named tensors, on disk or, with ``dtype``, once converted to it (floats only)."""
        total = 0
        for n in names:
            info = self.tensors[n]
            stored = SAFETENSORS_DTYPES.get(info.dtype)
            if dtype is not None and stored is not None and stored.is_floating_point:
                total += info.numel * dtype.itemsize
            else:
                total += info.nbytes
        return total

    def floating_dtype(self) -> torch.dtype | None:
        """The dtype most floating-point bytes are stored in (None when there are none)."""
        by_dtype: dict[torch.dtype, int] = {}
        for info in self.tensors.values():
            dt = SAFETENSORS_DTYPES.get(info.dtype)
            if dt is not None and dt.is_floating_point:
                by_dtype[dt] = by_dtype.get(dt, 0) + info.nbytes
        return max(by_dtype, key=by_dtype.get) if by_dtype else None

    # -- reading ----------------------------------------------------------------------------

    def load(self, names, *, device="cpu") -> dict[str, torch.Tensor]:
        """Read the named tensors (and only those), one shard file open at a time.

        Parameters
        ----------
        names : iterable of str
        device : str or torch.device
            Where safetensors places them (``"cpu"`` or a CUDA device).
        """
        by_file: dict[str, list[str]] = {}
        for n in names:
            if n not in self.tensors:
                raise KeyError(f"tensor {n!r} is not in checkpoint {self.model_dir}")
            by_file.setdefault(self.tensors[n].file, []).append(n)
        out: dict[str, torch.Tensor] = {}
        for f, keys in by_file.items():
            with safe_open(str(self.model_dir / f), framework="pt", device=str(device)) as fh:
                for k in keys:
                    out[k] = fh.get_tensor(k)
        return out


# ----------------------------------------------------------------------------- names
#: Buffers older checkpoints store that current models compute (transformers ignores them too).
_IGNORED_UNEXPECTED = (r"rotary_emb\.inv_freq$", r"(^|\.)position_ids$")


def describe_names(names, *, limit: int = 4) -> str:
    """``"N: a, b, c, d, ..."`` - a count and the first few names, sorted, for error messages."""
    names = sorted(names)
    more = ", ..." if len(names) > limit else ""
    return f"{len(names)}: {', '.join(names[:limit])}{more}"


def expected_tensor_names(model: torch.nn.Module) -> tuple[set[str], set[str]]:
    """What a model (a meta-device skeleton is enough) reads from a checkpoint.

    Returns
    -------
    required : set of str
        Parameter names, each tied tensor once (its first name; the tied copies
        ``all_tied_weights_keys`` lists are not stored).
    optional : set of str
        Persistent buffer names: a checkpoint may store them or not (most are computed).
    """
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    required = {n for n, _ in model.named_parameters()} - tied  # named_parameters drops tied duplicates
    optional = set(model.state_dict(keep_vars=True)) - required - tied
    return required, optional


def check_tensor_names(checkpoint: Checkpoint, model: torch.nn.Module) -> None:
    """Raise ``ValueError`` unless the checkpoint holds exactly the tensors ``model`` reads.

    Parameters
    ----------
    checkpoint : Checkpoint
    model : torch.nn.Module
        The model the checkpoint is to be loaded into, e.g. built on the meta device from
        the folder's ``config.json``. Checkpoint names may lack the model's
        ``base_model_prefix`` (a base-model checkpoint loaded into a causal LM).

    Raises
    ------
    ValueError
        Naming the missing and unexpected tensors (a count and a few names): the download
        is incomplete, or ``config.json`` does not describe these weights.
    """
    required, optional = expected_tensor_names(model)
    prefix = getattr(model, "base_model_prefix", "") or ""
    present = set()
    for name in checkpoint.tensors:
        present.add(f"{prefix}.{name}" if prefix and f"{prefix}.{name}" in required | optional else name)
    missing = _unignored(required - present, getattr(model, "_keys_to_ignore_on_load_missing", None))
    unexpected = _unignored(present - required - optional,
                            list(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())
                            + list(_IGNORED_UNEXPECTED))
    if missing or unexpected:
        raise tensor_mismatch_error(checkpoint.model_dir, type(model).__name__, missing, unexpected)


def _unignored(names: set[str], patterns) -> set[str]:
    regexes = [re.compile(p) for p in patterns or ()]
    return {n for n in names if not any(r.search(n) for r in regexes)}


def tensor_mismatch_error(where, model_class: str, missing, unexpected=(), mismatched=()) -> ValueError:
    """The error for weights that do not fit the model ``config.json`` describes."""
    parts = []
    if missing:
        parts.append(f"missing tensors ({describe_names(missing)})")
    if unexpected:
        parts.append(f"unexpected tensors ({describe_names(unexpected)})")
    if mismatched:
        parts.append(f"tensors of the wrong shape ({describe_names(mismatched)})")
    return ValueError(f"the weights in {where} do not match the {model_class} its config.json describes: "
                      f"{'; '.join(parts)}; the download is incomplete or config.json was edited - "
                      f"fix config.json or re-download the model")
