"""A GGUF file's header read on its own: the scalar metadata and the tensor table, no tensor data.

A GGUF file is a 24-byte preamble (``GGUF``, version, tensor count, metadata count), the
metadata key/value pairs, one entry per tensor (name, dimensions, ggml type, offset into
the data), then the tensor data from the next ``general.alignment`` boundary. Reading only
the header tells how long the file must be, which is what a truncated download gets wrong;
readers that map every tensor fail on such a file with errors about array shapes instead.
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GgufTensor", "GgufHeader", "read_gguf_header"]

# Metadata value types of a fixed width (u8, i8, u16, i16, u32, i32, f32, bool, u64, i64, f64)
_WIDTH = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_FORMAT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_VERSIONS = (2, 3)  # version 1 counted in 32 bits; no loader reads it any more


@dataclass(frozen=True)
class GgufTensor:
    """One entry of the tensor table: ``dims`` in GGUF order (fastest-moving first), ``offset`` from the data start."""

    name: str
    ggml_type: int
    dims: tuple[int, ...]
    offset: int


@dataclass(frozen=True)
class GgufHeader:
    """What the header says: scalar metadata (arrays left out), tensors, where their data starts.

    Cached per file: the metadata dict is shared, not to be changed.
    """

    metadata: dict
    tensors: tuple[GgufTensor, ...]
    data_start: int
    alignment: int


def read_gguf_header(path) -> GgufHeader:
    """Parse the header of a GGUF file (once per file, size and modification time).

    Raises
    ------
    ValueError
        The file is not a GGUF file of a version read here, or its header runs past the end
        of the file (a truncated file).
    """
    p = Path(path).resolve()
    st = p.stat()
    return _read(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read(path: str, size: int, mtime_ns: int) -> GgufHeader:
    with open(path, "rb") as fh:
        if size < 24:
            raise ValueError(f"the file has {size} bytes, fewer than the 24 of a GGUF preamble")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                return _parse(buf)
            except (struct.error, UnicodeDecodeError, OverflowError, MemoryError):
                raise ValueError(f"its header runs past the end of the file ({size:,} bytes)") from None


def _parse(buf) -> GgufHeader:
    if buf[:4] != b"GGUF":
        raise ValueError("it does not start with the GGUF magic bytes")
    version, tensor_count, metadata_count = struct.unpack_from("<IQQ", buf, 4)
    if version not in _VERSIONS:
        raise ValueError(f"it is GGUF version {version}; versions {' and '.join(map(str, _VERSIONS))} are read")
    pos, metadata = 24, {}
    for _ in range(metadata_count):
        key, pos = _string(buf, pos)
        (kind,) = struct.unpack_from("<I", buf, pos)
        if kind in _FORMAT:
            (metadata[key],) = struct.unpack_from(_FORMAT[kind], buf, pos + 4)
        elif kind == _STRING:
            metadata[key], _ = _string(buf, pos + 4)
        pos = _skip(buf, pos + 4, kind)
    tensors = []
    for _ in range(tensor_count):
        name, pos = _string(buf, pos)
        (ndim,) = struct.unpack_from("<I", buf, pos)
        dims = struct.unpack_from(f"<{ndim}Q", buf, pos + 4)
        ggml_type, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * ndim)
        pos += 4 + 8 * ndim + 12
        tensors.append(GgufTensor(name, ggml_type, tuple(dims), offset))
    alignment = int(metadata.get("general.alignment", 32)) or 32
    return GgufHeader(metadata, tuple(tensors), -(-pos // alignment) * alignment, alignment)


def _string(buf, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", buf, pos)
    end = pos + 8 + length
    if end > len(buf):
        raise struct.error("string past the end")
    return bytes(buf[pos + 8:end]).decode("utf-8"), end


def _skip(buf, pos: int, kind: int) -> int:
    """The offset just past a metadata value of type ``kind`` at ``pos``."""
    if kind in _WIDTH:
        end = pos + _WIDTH[kind]
    elif kind == _STRING:
        end = _string(buf, pos)[1]
    elif kind == _ARRAY:
        item, count = struct.unpack_from("<IQ", buf, pos)
        end = pos + 12
        if item in _WIDTH:
            end += count * _WIDTH[item]
        else:
            for _ in range(count):
                end = _skip(buf, end, item)
    else:
        raise ValueError(f"its metadata holds a value of unknown type {kind}")
    if end > len(buf):
        raise struct.error("value past the end")
    return end
