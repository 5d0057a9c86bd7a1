"""Calibration tokens: read documents, tokenise, pack into windows, draw a seeded sample.

A source is a plain-text file (``.txt``, or WikiText's ``.raw``/``.tokens``; documents separated by ``<|endoftext|>`` when the marker is
present, else the whole file is one document), a ``.json`` file (a list of records or
strings) or ``.jsonl`` file (one record per line), a folder of such files, or - when the
``datasets`` library is installed and the data is cached locally - a dataset name such as
``wikitext:wikitext-2-raw-v1``. A record gives its text in a ``text`` field, or as
Alpaca's ``instruction`` / ``input`` / ``output`` fields joined by newlines.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import torch

# .raw and .tokens are WikiText's plain-text files
PLAIN_SUFFIXES = (".txt", ".raw", ".tokens")
TEXT_SUFFIXES = PLAIN_SUFFIXES + (".json", ".jsonl")
DOC_SEPARATOR = "<|endoftext|>"
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
    get = getattr(config, "get_text_config", None)
    limit = getattr(get(decoder=True) if callable(get) else config, "max_position_embeddings", None)
    if seq_len is None:
        return min(DEFAULT_SEQ_LEN, limit) if isinstance(limit, int) else DEFAULT_SEQ_LEN
    if isinstance(limit, int) and seq_len > limit:
        raise ValueError(f"seq_len={seq_len} exceeds the model's max_position_embeddings={limit}; "
                         f"lower seq_len (--seq-len) to at most {limit}")
    return seq_len


def describe_calibration(source, *, n_samples: int, seq_len: int, seed: int) -> dict:
    """The settings that reproduce a :func:`load_calibration` call, for reports."""
    return {"source": str(source), "n_samples": n_samples, "seq_len": seq_len, "seed": seed}


# ----------------------------------------------------------------------------- documents
def read_documents(source) -> list[str]:
    """All documents of ``source`` (file, folder or dataset name) as a list of strings."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"calibration folder {path} holds no {', '.join(TEXT_SUFFIXES)} files")
        docs = [d for f in files for d in _read_file(f)]
    elif path.is_file():
        docs = _read_file(path)
    elif _looks_like_path(str(source)):
        raise FileNotFoundError(f"calibration file {source} does not exist")
    else:
        docs = _read_dataset(str(source))
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"calibration source {source} is empty (no non-blank text found)")
    return docs


def _looks_like_path(s: str) -> bool:
    """A dataset name is ``name``, ``owner/name`` or ``name:config``; anything else is a path."""
    return (s.startswith(("/", ".", "~")) or s.lower().endswith(TEXT_SUFFIXES) or s.count("/") > 1
            or "\\" in s)


def _read_file(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(f"calibration file {path} has an unsupported type {suffix!r}; "
                         f"use one of {', '.join(TEXT_SUFFIXES)} or a folder of them")
    text = path.read_text(encoding="utf-8", errors="replace")
    if suffix in PLAIN_SUFFIXES:
        return text.split(DOC_SEPARATOR) if DOC_SEPARATOR in text else [text]
    if suffix == ".jsonl":
        records = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path} line {i} is not valid JSON: {exc}") from None
    else:
        if not text.strip():
            return []
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        records = data if isinstance(data, list) else [data]
    return [record_text(r, where=str(path)) for r in records]


def record_text(record, *, where: str = "record") -> str:
    """Text of one record: a string, a ``text`` field, or Alpaca fields joined by newlines."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected records that are strings or objects, got {type(record).__name__}")
    if isinstance(record.get("text"), str):
        return record["text"]
    if "instruction" in record:
        parts = [record.get("instruction", "")]
        instances = record.get("instances")
        if isinstance(instances, list):  # the seed-task layout: one instruction, several instances
            for inst in instances:
                parts += [inst.get("input", ""), inst.get("output", "")]
        else:
            parts += [record.get("input", ""), record.get("output", "")]
        return "\n".join(str(p) for p in parts if p)
    raise ValueError(f"{where}: a record has neither a 'text' field nor Alpaca 'instruction'/'input'/'output' "
                     f"fields (keys: {sorted(record)[:8]})")


def _read_dataset(name: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise FileNotFoundError(
            f"calibration source {name} does not exist (no such file or folder; the `datasets` library, "
            f"needed to load it by name, is not installed)") from None
    ds_name, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(ds_name, config or None, split="train")
    except Exception as exc:  # datasets raises many types; all mean "not available here"
        raise FileNotFoundError(f"calibration source {name} is neither a file nor a folder, and the dataset "
                                f"could not be loaded locally: {exc}") from None
    return [record_text(r, where=name) for r in ds]


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
        warnings.warn(
            f"calibration source {source} has {stream.numel()} tokens, {n_windows} distinct windows of "
            f"seq_len={seq_len} for n_samples={n_samples}; the other {n_samples - n_windows} windows start at "
            f"random offsets and overlap. Give more text or lower n_samples/seq_len.", RuntimeWarning, stacklevel=3)
        extra = torch.randint(0, stream.numel() - seq_len + 1, (n_samples - n_windows,), generator=g)
        starts = torch.cat([torch.arange(n_windows) * seq_len, extra])
    offsets = torch.arange(seq_len)
    return stream[starts[:, None] + offsets[None, :]].contiguous()  # (n_samples, seq_len)
