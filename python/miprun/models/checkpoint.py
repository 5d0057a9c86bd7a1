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
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

__all__ = ["TensorInfo", "Checkpoint", "BrokenCheckpointError", "read_header", "SAFETENSORS_DTYPES", "INDEX_NAME",
           "SINGLE_NAME"]

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


#: Bits per element of the safetensors dtypes, to check each tensor's byte range against its shape.
_DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
               "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
               "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


class BrokenCheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt, or does not hold what its config and index say."""


def _corrupt(path, what: str) -> BrokenCheckpointError:
    return BrokenCheckpointError(f"{path} is corrupt: {what}; re-download or re-save it")


def read_header(path: Path) -> dict:
    """The JSON header of one ``.safetensors`` file (tensor entries plus ``__metadata__``), checked for wholeness.

    The file must be exactly the 8-byte header length, the JSON header, and the tensor
    bytes its entries describe: each entry's byte range fits its dtype and shape, the
    ranges follow one another without gap or overlap, and the last one ends where the file
    does. No tensor data is read.

    Raises
    ------
    BrokenCheckpointError
        (a ``ValueError``) When the file is shorter than its header says (a truncated
        download or copy), longer, or its header is not a safetensors header.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        raw = fh.read(8)
        if len(raw) != 8:
            raise BrokenCheckpointError(f"{path} is truncated: it has {size:,} bytes, fewer than the 8 of its header "
                                        f"length; re-download or re-save it")
        (length,) = struct.unpack("<Q", raw)
        # Checked before reading: a garbage length would otherwise ask for petabytes.
        if length > size - 8:
            raise BrokenCheckpointError(f"{path} is truncated or corrupt: its header length says {length:,} bytes of "
                                        f"JSON, the file has {size - 8:,} after the length; re-download or re-save it")
        body = fh.read(length)
    try:
        header = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object")
    expected = 8 + length + _data_bytes(path, header)
    if expected > size:
        raise BrokenCheckpointError(f"{path} is truncated: its header promises {expected:,} bytes, the file has "
                                    f"{size:,}; re-download or re-save it")
    if expected < size:
        raise BrokenCheckpointError(f"{path} is longer than its header says: the header promises {expected:,} bytes, "
                                    f"the file has {size:,} (damaged, or another file's bytes appended); re-download "
                                    f"or re-save it")
    return header


def _data_bytes(path, header: dict) -> int:
    """Bytes of tensor data the header describes, each entry checked against its dtype and shape."""
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(v) for v in entry["data_offsets"])
            shape = [int(s) for s in entry["shape"]]
            dtype = str(entry["dtype"])
        except (TypeError, KeyError, ValueError):
            raise _corrupt(path, f"the header entry of {name!r} has no valid dtype, shape and data_offsets") from None
        if begin < 0 or end < begin or any(s < 0 for s in shape):
            raise _corrupt(path, f"the header entry of {name!r} has shape {shape} and byte range {begin}..{end}")
        bits = _DTYPE_BITS.get(dtype)
        numel = 1
        for s in shape:
            numel *= s
        if bits is not None and numel * bits != 8 * (end - begin):
            raise _corrupt(path, f"tensor {name!r} is {dtype} of shape {shape} ({numel * bits // 8:,} bytes) but its "
                                 f"header gives it {end - begin:,} bytes")
        ranges.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(ranges):
        if begin != position:
            raise _corrupt(path, f"tensor {name!r} starts at byte {begin:,} of the data, where the one before it ends "
                                 f"at {position:,}")
        position = end
    return position


def _read_index(index_path: Path) -> tuple[dict, dict]:
    """``(weight_map, metadata)`` of a ``model.safetensors.index.json``."""
    try:
        index = json.loads(index_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BrokenCheckpointError(f"{index_path} is not valid JSON ({exc}): the checkpoint index is damaged; "
                                    f"re-download it") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(f, str) for f in weight_map.values()):
        raise BrokenCheckpointError(f"{index_path} has no valid 'weight_map' (tensor name -> shard file): the "
                                    f"checkpoint index is damaged; re-download it")
    return weight_map, dict(index.get("metadata") or {})


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
    BrokenCheckpointError
        (a ``ValueError``) When a file is truncated or corrupt (:func:`read_header`), the
        index is not valid, names a tensor its shard's header does not list, or does not
        list a tensor a shard holds.
    """

    def __init__(self, model_dir) -> None:
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"checkpoint folder {self.model_dir} does not exist")
        index_path = self.model_dir / INDEX_NAME
        if index_path.exists():
            weight_map, self.index_metadata = _read_index(index_path)
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
        unlisted: list[str] = []
        for f in files:
            header = read_header(self.model_dir / f)
            self.file_metadata[f] = dict(header.pop("__metadata__", None) or {})
            for name, entry in header.items():
                if weight_map is not None and name not in weight_map:
                    unlisted.append(f"{name} (in {f})")
                if weight_map is not None and weight_map.get(name) != f:
                    continue  # the index is authoritative when a name appears in two shards
                begin, end = entry["data_offsets"]
                self.tensors[name] = TensorInfo(f, entry["dtype"], tuple(entry["shape"]), end - begin)
        if weight_map is not None:
            absent = [n for n in weight_map if n not in self.tensors]
            if absent:
                raise BrokenCheckpointError(
                    f"checkpoint {self.model_dir} is damaged: {len(absent)} tensor(s) named by {INDEX_NAME} are not "
                    f"in their shard's header, e.g. {absent[:3]} (expected in {weight_map[absent[0]]}); "
                    f"re-download the checkpoint")
            if unlisted:
                # Loaders disagree on such tensors (transformers reads them, the index says they are not there).
                raise BrokenCheckpointError(
                    f"checkpoint {self.model_dir} is damaged: its shards hold {len(unlisted)} tensor(s) that "
                    f"{INDEX_NAME} does not list, e.g. {unlisted[:3]}; re-download the checkpoint")

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
