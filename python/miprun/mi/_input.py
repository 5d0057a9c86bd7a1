"""Validation and conversion of estimator inputs: one place, shared by every backend."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    elif isinstance(a, np.ndarray) or np.isscalar(a) or isinstance(a, (list, tuple)):
        arr = np.asarray(a)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise ValueError(f"{name} must be a torch tensor or a numpy array, got {type(a).__name__}")
    if t.is_complex():
        raise ValueError(f"{name} must be real, got {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    return t


def check_pair(x, y, *, min_samples: int = 1, needs: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``x, y`` as 2-D tensors of shape ``(n, d)`` on one device, or raise ``ValueError``.

    ``x, y``: paired samples, shape ``(n,)`` or ``(n, d)``. Rejects mismatched shapes,
    empty input, fewer than ``min_samples`` samples (``needs`` names what needs them, e.g.
    ``"KSG with k=3"``), and NaN or infinite values.
    """
    x = as_tensor(x, "x")
    y = as_tensor(y, "y")
    if x.ndim not in (1, 2) or y.ndim not in (1, 2):
        raise ValueError(f"x and y must have shape (n,) or (n, d); got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must pair up sample for sample: x has {x.shape[0]} samples, y has {y.shape[0]}")
    if x.shape[0] == 0 or x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"empty input: x has shape {tuple(x.shape)}, y has shape {tuple(y.shape)}")
    if x.shape[0] < min_samples:
        raise ValueError(f"{needs or 'the estimate'} needs at least {min_samples} samples, got {x.shape[0]}")
    if x.device != y.device:
        raise ValueError(f"x and y are on different devices ({x.device} and {y.device})")
    for name, t in (("x", x), ("y", y)):
        if not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{name} contains {n_bad} NaN or infinite values; drop or mask them first")
    return x, y


def check_same_columns(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"reduction={what!r} pairs column j of x with column j of y, so they need the same "
            f"number of columns; got {x.shape[1]} and {y.shape[1]}"
        )
