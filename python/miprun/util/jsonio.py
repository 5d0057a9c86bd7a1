"""One JSON writer for everything miprun writes: strict JSON, converted values, atomic replacement."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["to_jsonable", "dumps", "write_json"]


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types: NaN/inf -> None, numpy/torch -> lists and numbers, Path -> str."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0 and not hasattr(obj, "detach"):
        return to_jsonable(obj.item())  # numpy scalar
    if hasattr(obj, "tolist") and hasattr(obj, "ndim"):  # numpy array or torch tensor
        data = obj.detach().cpu() if hasattr(obj, "detach") else obj
        return to_jsonable(data.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj)]
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    return str(obj)


def dumps(data: Any) -> str:
    """Strict JSON text (no NaN or infinities: they become null), indented, with a final newline."""
    return json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as strict JSON through a temporary file renamed into place: never half-written.

    The caller decides whether ``path`` may be written (see :mod:`miprun.output.guard`).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
