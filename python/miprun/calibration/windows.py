"""Calibration tokens: read documents, tokenise, pack into windows, draw a seeded sample.

A source is a text file, a folder of them, or - when the ``datasets`` library is
installed and the data is cached locally - a dataset name such as
``wikitext:wikitext-2-raw-v1``; :mod:`miprun.calibration.documents` reads them.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Iterator

import torch

from miprun.calibration.documents import (DOC_SEPARATOR, PLAIN_SUFFIXES, TEXT_SUFFIXES, read_documents,  # noqa: F401
                                          record_text)
from miprun.models.blocks import text_config
# Tokenising stops once the stream holds this many times the tokens the sample needs:
# plenty of distinct windows to draw from, without tokenising a whole large corpus.
STREAM_FACTOR = 8
DEFAULT_SEQ_LEN = 2048
_TOKENISE_BATCH = 64


def load_calibration(source, tokenizer, *, n_samples: int = 128, seq_len: int = 2048,
                     seed: int = 0) -> torch.LongTensor:
    """Token windows for calibration.

    Parameters
    ----------
    source : str or Path
        A ``.txt`` (or ``.raw``/``.tokens``), ``.json`` or ``.jsonl`` file, a folder of such files, or a locally
        cached ``datasets`` name (``name`` or ``name:config``; split ``train``).
    tokenizer : transformers tokenizer
        Used without special tokens; documents are joined with its EOS token (its BOS or
        SEP token when it has no EOS, nothing when it has neither).
    n_samples : int
        Number of windows to draw.
    seq_len : int
        Tokens per window.
    seed : int
        Seeds which windows are drawn.

    Returns
    -------
    LongTensor, shape (n_samples, seq_len)
        Windows of the concatenated token stream. Non-overlapping windows are drawn
        without replacement; when the stream holds fewer than ``n_samples`` of them, all
        are used and the rest start at seeded random offsets (a warning says so).

    Raises
    ------
    FileNotFoundError
        The source does not exist and cannot be loaded as a dataset.
    ValueError
        Empty source, bad sizes, or fewer than ``seq_len`` tokens in all.
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an int >= 2, got {seq_len!r}")
    docs = read_documents(source)
    stream = tokenise_stream(docs, tokenizer, max_tokens=STREAM_FACTOR * n_samples * seq_len)
    if stream.numel() == 0:
        raise ValueError(f"calibration source {source} contains no text")
    if stream.numel() < seq_len:
        raise ValueError(
            f"calibration source {source} has only {stream.numel()} tokens, fewer than one window of "
            f"seq_len={seq_len}; lower seq_len (--seq-len) to at most {stream.numel()} or give more text")
    return draw_windows(stream, n_samples=n_samples, seq_len=seq_len, seed=seed, source=source)


def window_length(seq_len: int | None, config=None) -> int:
    """``seq_len``, checked against the model's ``max_position_embeddings``; default ``min(2048, that)``."""
    limit = getattr(text_config(config), "max_position_embeddings", None)
    if seq_len is None:
        return min(DEFAULT_SEQ_LEN, limit) if isinstance(limit, int) else DEFAULT_SEQ_LEN
    if isinstance(limit, int) and seq_len > limit:
        raise ValueError(f"seq_len={seq_len} exceeds the model's max_position_embeddings={limit}; "
                         f"lower seq_len (--seq-len) to at most {limit}")
    return seq_len


def describe_calibration(source, *, n_samples: int, seq_len: int, seed: int) -> dict:
    """The settings that reproduce a :func:`load_calibration` call, for reports."""
    return {"source": str(source), "n_samples": n_samples, "seq_len": seq_len, "seed": seed}


# ----------------------------------------------------------------------------- tokens
def _separator_id(tokenizer) -> list[int]:
    for attr in ("eos_token_id", "bos_token_id", "sep_token_id"):
        tid = getattr(tokenizer, attr, None)
        if isinstance(tid, int):
            return [tid]
    return []


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def tokenise_stream(docs: Iterable[str], tokenizer, *, max_tokens: int | None = None) -> torch.LongTensor:
    """Token ids of the documents joined by the separator token, shape (n_tokens,).

    Stops after the batch that brings the stream to ``max_tokens`` (no limit when None).
    """
    sep = _separator_id(tokenizer)
    ids: list[int] = []
    for batch in _batches(list(docs), _TOKENISE_BATCH):
        # verbose=False: documents longer than the model's context are expected here (they are cut into windows)
        enc = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for toks in enc:
            if ids and sep:
                ids.extend(sep)
            ids.extend(toks)
        if max_tokens is not None and len(ids) >= max_tokens:
            break
    return torch.tensor(ids, dtype=torch.long)


def draw_windows(stream: torch.Tensor, *, n_samples: int, seq_len: int, seed: int,
                 source="tokens") -> torch.LongTensor:
    """Draw ``n_samples`` windows of ``seq_len`` tokens from ``stream: (n_tokens,)``."""
    g = torch.Generator().manual_seed(int(seed))
    n_windows = stream.numel() // seq_len
    if n_windows >= n_samples:
        starts = torch.randperm(n_windows, generator=g)[:n_samples] * seq_len
    else:
        extra = torch.randint(0, stream.numel() - seq_len + 1, (n_samples - n_windows,), generator=g)
        starts = torch.cat([torch.arange(n_windows) * seq_len, extra])
        warnings.warn(_overlap_message(source, stream.numel(), n_samples, seq_len, n_windows,
                                       int(starts.unique().numel())), RuntimeWarning, stacklevel=3)
    offsets = torch.arange(seq_len)
    return stream[starts[:, None] + offsets[None, :]].contiguous()  # (n_samples, seq_len)


def _overlap_message(source, n_tokens: int, n_samples: int, seq_len: int, n_windows: int, n_distinct: int) -> str:
    """What happened when the text is too short for ``n_samples`` separate windows."""
    head = (f"calibration source {source} gives {n_tokens} tokens, fewer than n_samples x seq_len = "
            f"{n_samples} x {seq_len} = {n_samples * seq_len}: windows overlap; ")
    if n_distinct == 1:
        what = f"all {n_samples} windows are identical (the text is one window long)"
    else:
        what = (f"only {n_windows} distinct windows fit side by side, the other {n_samples - n_windows} start at "
                f"seeded offsets inside them ({n_distinct} different windows in all)")
    return head + what + ". Give more text or lower n_samples (--n-samples) or seq_len (--seq-len)."
