"""Devices named on the command line or in the API, checked against this machine and this torch build."""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "default_device"]

# Device types miprun can compute on; torch knows more (meta, ipu, ...) that hold no data or are unsupported.
_KINDS = ("cpu", "cuda", "mps", "xpu")


def default_device() -> torch.device:
    """The first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(text_or_device) -> torch.device:
    """The device ``text_or_device`` names, when this machine has it.

    Parameters
    ----------
    text_or_device : str, torch.device, int or None
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"xpu"``, a ``torch.device``, a CUDA
        index, or None / ``"auto"`` for :func:`default_device`.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        The text is not a device, or this torch build or machine lacks it; the message
        says which devices there are.
    """
    if text_or_device is None or text_or_device == "auto":
        return default_device()
    text = str(text_or_device).strip()
    try:
        device = torch.device(text_or_device if isinstance(text_or_device, (torch.device, int)) else text)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {text}: not a device; use cpu, cuda, cuda:N (N counts from 0) or mps") from None
    if device.type not in _KINDS:
        raise ValueError(f"--device {text}: miprun computes on {', '.join(_KINDS)}, not {device.type}")
    if device.type == "cuda":
        _check_cuda(text, device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {text}: this machine or torch build ({_build()}) has no MPS; use --device cpu")
    elif device.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ValueError(f"--device {text}: this machine or torch build ({_build()}) has no XPU; use --device cpu")
    return device


def _build() -> str:
    return f"torch {torch.__version__}"


def _check_cuda(text: str, device: torch.device) -> None:
    if torch.version.cuda is None and torch.version.hip is None:
        raise ValueError(f"--device {text}: this torch build has no CUDA ({_build()}); use --device cpu, "
                         f"or install a CUDA build of torch")
    count = torch.cuda.device_count()
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hidden = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise ValueError(f"--device {text}: no CUDA GPU is visible{hidden}; use --device cpu")
    if device.index is not None and device.index >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ValueError(f"--device {text}: this machine has {count} CUDA GPU{'s' if count > 1 else ''} ({have}); "
                         f"use one of those")
