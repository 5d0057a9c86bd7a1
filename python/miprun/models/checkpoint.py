"""Read a safetensors checkpoint folder without loading it: which file holds each tensor, and how big it is.

A Hugging Face checkpoint is either one ``model.safetensors`` or several shards listed by
``model.safetensors.index.json`` (``{"metadata": {"total_size": ...}, "weight_map": {name: file}}``).
Every shard starts with a little-endian ``u64`` header length and a JSON header giving each
tensor's dtype, shape and byte range, so names, shapes and sizes are known from the headers
alone, before any weight is read.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

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


def read_header(path: Path) -> dict:
    """The JSON header of one ``.safetensors`` file (tensor entries plus ``__metadata__``)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", raw)
        body = fh.read(length)
    if len(body) != length:
        raise ValueError(f"{path} is truncated: its header says {length} bytes, the file has {len(body)}")
    return json.loads(body)


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

    # -- blocks -----------------------------------------------------------------------------

    def block_names(self, prefix: str) -> dict[int, list[str]]:
        """Tensor names grouped by block index, for names ``<prefix><i>.<rest>``.

        Parameters
        ----------
        prefix : str
            State-dict prefix of the block list, e.g. ``"model.layers."``.
        """
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        groups: dict[int, list[str]] = {}
        for name in self.tensors:
            m = pattern.match(name)
            if m:
                groups.setdefault(int(m.group(1)), []).append(name)
        return groups

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
