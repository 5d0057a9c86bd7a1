"""Perplexity of a causal LM on a text, by the standard protocol.

Perplexity follows the standard protocol: the text is concatenated, tokenised once, and cut
into windows of ``seq_len`` tokens; every token is predicted from the tokens before it in its
window, and the perplexity is ``exp`` of the mean negative log-likelihood over the scored
tokens. Two variants:

- ``stride=None`` (default): non-overlapping windows ``[i*seq_len, (i+1)*seq_len)`` for
  ``i < n_tokens // seq_len``; the incomplete tail is dropped and each window scores its
  ``seq_len - 1`` last tokens (its first token has no context). This is the protocol of the
  pruning literature (SparseGPT, ShortGPT, MI-PRUN's WikiText-2 numbers).
- ``stride=S`` (``1 <= S <= seq_len``): the sliding window of the ``transformers``
  perplexity guide. Windows start at ``0, S, 2S, ...`` and end at ``min(start + seq_len, n)``
  (the last one reaches the end of the text); each window scores only the tokens the previous
  window did not, so with ``S < seq_len`` every token after the first is scored exactly once,
  with at least ``seq_len - S`` tokens of context.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from miprun.calibration.documents import read_file_documents

__all__ = ["Span", "PerplexityResult", "read_text", "tokenize_text", "window_spans", "perplexity",
           "model_max_length", "device_of"]



@dataclass(frozen=True)
class Span:
    """One window of the perplexity protocol.

    The model reads tokens ``[begin, end)``; tokens ``[first, end)`` are scored, each from the
    tokens of the window before it (``begin < first <= end``).
    """

    begin: int
    end: int
    first: int

    @property
    def scored(self) -> int:
        return self.end - self.first


@dataclass
class PerplexityResult:
    """Perplexity of a model on one text.

    Attributes
    ----------
    perplexity : float
        ``exp(nll)``.
    nll : float
        Mean negative log-likelihood per scored token, in nats.
    tokens_scored : int
        Number of tokens whose likelihood entered the mean.
    text_tokens : int
        Number of tokens of the whole tokenised text.
    windows : int
        Number of model calls (windows).
    seq_len : int
        Window length in tokens.
    stride : int or None
        ``None`` for non-overlapping windows, else the sliding-window stride.
    source : str
        Where the text came from (file path) or ``"<tokens>"``.
    """

    perplexity: float
    nll: float
    tokens_scored: int
    text_tokens: int
    windows: int
    seq_len: int
    stride: int | None
    source: str = "<tokens>"

    def to_dict(self) -> dict:
        return asdict(self)


def read_text(path: str | Path) -> str:
    """Read an evaluation text.

    Documents are read as calibration reads them (:func:`miprun.calibration.documents.read_file_documents`):
    ``.json`` / ``.jsonl`` records' ``text`` field, or Alpaca's ``instruction`` / ``input`` /
    ``output`` (or ``instances``) joined by newlines; a text file's documents separated by
    ``<|endoftext|>`` (TinyStories). Several documents are stripped and joined by a blank
    line, since the marker is not text to predict; a single document is returned unchanged.
    Files of other suffixes are read as UTF-8 text.

    Raises
    ------
    ValueError
        If the file does not exist, is not UTF-8 text, or holds no text.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"evaluation text {str(p)!r} does not exist or is not a file; "
                         "pass a .txt/.raw file or a .json/.jsonl file with a 'text' field")
    docs = read_file_documents(p, any_suffix=True)
    text = docs[0] if len(docs) == 1 else "\n\n".join(d.strip() for d in docs if d.strip())
    if not text.strip():
        raise ValueError(f"evaluation text {str(p)!r} is empty")
    return text


def tokenize_text(text: str, tokenizer) -> torch.Tensor:
    """Tokenise the whole text once, with the tokenizer's own special tokens (e.g. one BOS).

    Returns
    -------
    ids : LongTensor, shape (n_tokens,)
    """
    # verbose=False: the text is meant to be longer than the model's context.
    enc = tokenizer(text, add_special_tokens=True, return_attention_mask=False, verbose=False)
    return torch.tensor(enc["input_ids"], dtype=torch.long)


def window_spans(n_tokens: int, seq_len: int, stride: int | None = None) -> list[Span]:
    """The windows of the perplexity protocol (see the module docstring).

    Parameters
    ----------
    n_tokens : int
        Length of the tokenised text.
    seq_len : int
        Window length.
    stride : int or None
        ``None``: non-overlapping windows, tail dropped. Else the sliding-window stride,
        ``1 <= stride <= seq_len``.

    Raises
    ------
    ValueError
        On bad lengths, or a text too short for one window.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len}: a window needs at least 2 tokens")
    if stride is None:
        n_windows = n_tokens // seq_len
        if n_windows == 0:
            raise ValueError(f"the text has {n_tokens} tokens, fewer than one window of seq_len={seq_len}; "
                             f"lower --seq-len to at most {n_tokens} or give a longer text")
        return [Span(i * seq_len, (i + 1) * seq_len, i * seq_len + 1) for i in range(n_windows)]
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride={stride} must be between 1 and seq_len={seq_len}")
    if n_tokens < 2:
        raise ValueError(f"the text has {n_tokens} tokens; at least 2 are needed to score one")
    spans, prev_end, begin = [], 0, 0
    while True:
        end = min(begin + seq_len, n_tokens)
        first = max(prev_end, begin + 1)
        if end > first:
            spans.append(Span(begin, end, first))
        prev_end = end
        if end == n_tokens:
            return spans
        begin += stride


def model_max_length(model) -> int | None:
    """The longest sequence the model's position embeddings cover, from its config (or None)."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.inference_mode()
def perplexity(model, text_or_ids, *, tokenizer=None, seq_len: int = 2048, stride: int | None = None,
               batch_size: int = 1, source: str | None = None) -> PerplexityResult:
    """Perplexity of a causal language model on a text (see the module docstring for the protocol).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM; it runs on the device of its parameters.
    text_or_ids : str, pathlib.Path or LongTensor of shape (n_tokens,)
        The text itself (a ``str`` is always text), a file (a ``Path``, read with
        :func:`read_text`), or token ids already tokenised.
    tokenizer : transformers tokenizer, optional
        Needed when text is given.
    seq_len : int
        Window length in tokens; must not exceed the model's maximum length.
    stride : int or None
        ``None`` for non-overlapping windows; else the sliding-window stride.
    batch_size : int
        Windows of equal length evaluated together.
    source : str, optional
        Label recorded in the result.

    Returns
    -------
    PerplexityResult
        The log-likelihoods are summed in float64, the logits of each window in float32.
    """
    if isinstance(text_or_ids, torch.Tensor):
        ids = text_or_ids.reshape(-1).to(torch.long)
        source = source or "<tokens>"
    else:
        if tokenizer is None:
            raise ValueError("perplexity() was given text but no tokenizer; pass tokenizer=...")
        if isinstance(text_or_ids, Path):
            source = source or str(text_or_ids)
            text_or_ids = read_text(text_or_ids)
        ids = tokenize_text(str(text_or_ids), tokenizer)
        source = source or "<text>"
    limit = model_max_length(model)
    if limit is not None and seq_len > limit:
        raise ValueError(f"seq_len={seq_len} exceeds the model's maximum length {limit}; "
                         f"use --seq-len {limit} or less")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    spans = window_spans(int(ids.numel()), seq_len, stride)
    device = device_of(model)
    keep_arg = _accepts(model, "logits_to_keep")
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    try:
        for group in _batches(spans, batch_size):
            begin0 = group[0]
            length = begin0.end - begin0.begin
            batch = torch.stack([ids[s.begin:s.end] for s in group]).to(device)  # (b, length)
            # Scored positions sit at the end of every window, so only their logits are needed.
            keep = max(s.end - s.first for s in group) + 1
            kwargs = {"use_cache": False}
            if keep_arg:
                kwargs["logits_to_keep"] = keep
            logits = model(input_ids=batch, **kwargs).logits  # (b, keep or length, vocab)
            offset = length - logits.shape[1]  # position in the window of logits[:, 0]
            for row, s in enumerate(group):
                lo = s.first - 1 - s.begin - offset
                hi = s.end - 1 - s.begin - offset
                pred = logits[row, lo:hi].float()  # (scored, vocab): predictions of tokens first..end-1
                target = batch[row, s.first - s.begin:s.end - s.begin]
                nll = torch.nn.functional.cross_entropy(pred, target, reduction="sum")
                total_nll += float(nll.double())
                total_tokens += s.scored
    finally:
        model.train(was_training)
    mean = total_nll / total_tokens
    return PerplexityResult(perplexity=math.exp(mean), nll=mean, tokens_scored=total_tokens,
                            text_tokens=int(ids.numel()), windows=len(spans), seq_len=seq_len,
                            stride=stride, source=source)


def _batches(spans: Sequence[Span], batch_size: int):
    """Consecutive spans of equal length, at most ``batch_size`` at a time."""
    group: list[Span] = []
    for s in spans:
        if group and (len(group) == batch_size or (s.end - s.begin) != (group[0].end - group[0].begin)):
            yield group
            group = []
        group.append(s)
    if group:
        yield group
