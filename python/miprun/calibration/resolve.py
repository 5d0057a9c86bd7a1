"""Calibration as token ids: given as a tensor, or read from a text source, with a description for the report."""

from __future__ import annotations

import hashlib
import os

import torch

from miprun.calibration.options import CalibrationOptions
from miprun.calibration.windows import describe_calibration, load_calibration, window_length
from miprun.models.blocks import text_config
from miprun.models.families import bos_first

__all__ = ["resolve_calibration", "token_digest", "check_vocabulary", "prefix_bos"]


def token_digest(input_ids: torch.Tensor) -> str:
    """sha256 of the calibration token ids (int64, row-major): identifies the exact tokens scored."""
    return hashlib.sha256(input_ids.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()).hexdigest()


def resolve_calibration(calibration, *, tokenizer=None, options: CalibrationOptions | None = None,
                        config=None) -> tuple[torch.Tensor, dict]:
    """Token ids ``(n_samples, seq_len)`` and their description (source, sizes, sha256).

    Parameters
    ----------
    calibration : LongTensor (n_samples, seq_len), path, or (source, tokenizer)
        Token ids as they are, or a text source read with
        :func:`miprun.calibration.windows.load_calibration` (needs ``tokenizer``).
    tokenizer : transformers tokenizer, optional
        For a text source.
    options : CalibrationOptions, optional
        Windows to draw from a text source (ignored for token ids).
    config : transformers config, optional
        The model's: the default window length is ``min(2048, max_position_embeddings)``
        and a longer ``seq_len`` is refused.
    """
    options = options or CalibrationOptions()
    if isinstance(calibration, (str, os.PathLike)):
        if tokenizer is None:
            raise ValueError(f"calibration text {calibration} needs a tokenizer; pass tokenizer=... or token ids")
        calibration = (calibration, tokenizer)
    if isinstance(calibration, torch.Tensor):
        ids = calibration
        if ids.ndim != 2 or ids.dtype != torch.long or ids.numel() == 0:
            raise ValueError(f"calibration token ids must be a non-empty LongTensor (n_samples, seq_len), got "
                             f"{tuple(ids.shape)} {ids.dtype}")
        desc = {"source": "token ids"}
    elif isinstance(calibration, (tuple, list)) and len(calibration) == 2:
        source, tok = calibration
        seq_len = window_length(options.seq_len, config)
        ids = load_calibration(source, tok, n_samples=options.n_samples, seq_len=seq_len, seed=options.seed)
        desc = describe_calibration(source, n_samples=options.n_samples, seq_len=seq_len, seed=options.seed)
        bos = getattr(tok, "bos_token_id", None)
        if config is not None and bos is not None and bos_first(text_config(config)):
            ids = prefix_bos(ids, bos)  # the model reads nothing that does not start with BOS (Gemma)
            desc["bos_first"] = True
    else:
        raise ValueError("calibration must be a LongTensor of token ids (n_samples, seq_len), a text source with "
                         f"a tokenizer, or a (source, tokenizer) pair; got {type(calibration).__name__}")
    desc.update({"n_samples": int(ids.shape[0]), "seq_len": int(ids.shape[1]), "tokens": int(ids.numel()),
                 "sha256": token_digest(ids)})
    if config is not None:
        check_vocabulary(ids, config)
    return ids, desc


def prefix_bos(ids: torch.Tensor, bos: int) -> torch.Tensor:
    """Windows ``(n, seq_len)`` that start with ``bos``: each window's text shifted right by one (its last token
    dropped), the window length unchanged."""
    return torch.cat([torch.full((ids.shape[0], 1), bos, dtype=ids.dtype), ids[:, :-1]], dim=1)


def check_vocabulary(ids: torch.Tensor, config) -> None:
    """Refuse token ids outside the model's vocabulary (a tokenizer from another model)."""
    vocab = getattr(text_config(config), "vocab_size", None)
    if isinstance(vocab, int) and int(ids.max()) >= vocab:
        raise ValueError(f"calibration token id {int(ids.max())} is outside the model's vocabulary of {vocab}; "
                         f"use the model's own tokenizer")
