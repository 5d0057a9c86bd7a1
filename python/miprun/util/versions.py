"""Versions of miprun and of the libraries that shape its numbers, recorded in every report."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import torch

from miprun._native import package_version

__all__ = ["versions"]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    """Versions of miprun, python, torch, transformers and the libraries that shape the numbers, and the GPU."""
    out: dict[str, Any] = {"miprun": package_version(), "python": platform.python_version(),
                           "platform": platform.platform(), "machine": platform.machine()}
    for dist in ("torch", "transformers", "numpy", "triton", "safetensors", "accelerate", "lm_eval", "gguf"):
        out[dist] = _version(dist)
    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out
