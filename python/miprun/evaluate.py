"""Evidence about a (pruned) model: perplexity, parameter counts and measured speed.

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
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

__all__ = [
    "Span", "PerplexityResult", "ParameterCount", "SpeedResult",
    "read_text", "tokenize_text", "window_spans", "perplexity", "count_parameters",
    "measure_speed", "prefill_and_decode", "model_max_length", "default_seq_len", "evaluate_model", "format_evaluation",
]

#: File suffixes read as JSON documents (a ``text`` field, or Alpaca's instruction/input/output).
_JSON_SUFFIXES = (".json", ".jsonl")
#: Document separator of TinyStories-style text files (the same one :mod:`miprun.calibrate` splits on).
_DOC_SEPARATOR = "<|endoftext|>"


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

    ``.json`` / ``.jsonl`` files hold documents: each record's ``text`` field, or Alpaca's
    ``instruction`` / ``input`` / ``output`` joined by newlines; documents are joined by a
    blank line. A text file whose documents are separated by ``<|endoftext|>`` (TinyStories)
    has the markers replaced by that blank line too, since the marker is not text to predict.
    Any other file is read as UTF-8 text, unchanged.

    Raises
    ------
    ValueError
        If the file does not exist or holds no text.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"evaluation text {str(p)!r} does not exist or is not a file; "
                         "pass a .txt/.raw file or a .json/.jsonl file with a 'text' field")
    if p.suffix.lower() in _JSON_SUFFIXES:
        text = "\n\n".join(_json_documents(p))
    else:
        text = p.read_text(encoding="utf-8")
        if _DOC_SEPARATOR in text:
            text = "\n\n".join(d.strip() for d in text.split(_DOC_SEPARATOR) if d.strip())
    if not text.strip():
        raise ValueError(f"evaluation text {str(p)!r} is empty")
    return text


def _json_documents(p: Path) -> list[str]:
    raw = p.read_text(encoding="utf-8")
    try:
        records = json.loads(raw)
        if isinstance(records, dict):
            records = [records]
    except json.JSONDecodeError:
        records = [json.loads(line) for line in raw.splitlines() if line.strip()]
    docs = []
    for r in records:
        if isinstance(r, str):
            docs.append(r)
        elif "text" in r:
            docs.append(str(r["text"]))
        elif "instruction" in r:
            docs.append("\n".join(str(r[k]) for k in ("instruction", "input", "output") if r.get(k)))
        else:
            raise ValueError(f"{str(p)!r}: a record has neither a 'text' field nor Alpaca's "
                             f"'instruction'; its keys are {sorted(r)}")
    return docs


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


def _device_of(model) -> torch.device:
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
    device = _device_of(model)
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


@dataclass
class ParameterCount:
    """Parameter counts of a model.

    Attributes
    ----------
    total : int
        Every distinct parameter tensor's elements (tied weights counted once).
    per_token : int
        Parameters a forward pass uses for one token: the total, except that an embedding
        table that is only looked up (not tied to an output projection) counts one row,
        ``embedding_dim``, instead of all of them. With tied input/output embeddings the table
        is used in full by the output head, so it counts in full.
    embedding_rows_unused : int
        ``total - per_token``.
    """

    total: int
    per_token: int
    embedding_rows_unused: int

    def to_dict(self) -> dict:
        return asdict(self)


def count_parameters(model) -> ParameterCount:
    """Count a model's parameters (see :class:`ParameterCount` for the definitions)."""
    seen: dict[int, torch.nn.Parameter] = {}
    for p in model.parameters():  # parameters() already yields a tied tensor once
        seen[id(p)] = p
    total = sum(p.numel() for p in seen.values())
    used_by_matmul = {id(m.weight) for m in model.modules()
                      if isinstance(m, torch.nn.Linear) and m.weight is not None}
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out_emb is not None and getattr(out_emb, "weight", None) is not None:
        used_by_matmul.add(id(out_emb.weight))
    unused = 0
    done: set[int] = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding) and id(m.weight) not in done:
            done.add(id(m.weight))
            if id(m.weight) not in used_by_matmul:
                unused += m.weight.numel() - m.embedding_dim
    return ParameterCount(total=total, per_token=total - unused, embedding_rows_unused=unused)


@dataclass
class SpeedResult:
    """Measured throughput of a model (median over repeats, after warm-up).

    Attributes
    ----------
    prefill_tokens_per_s : float
        ``batch * length`` prompt tokens per second of a forward pass that fills the KV cache.
    decode_tokens_per_s : float
        ``batch * decode_tokens / decode_s``: tokens per second of ``decode_tokens`` greedy
        one-token steps on that cache.
    prefill_s, decode_s : float
        Median seconds of one prefill and of the whole decode loop.
    batch, length, decode_tokens, warmup, repeats : int
        The settings.
    device, dtype : str
    """

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    prefill_s: float
    decode_s: float
    batch: int
    length: int
    decode_tokens: int
    warmup: int
    repeats: int
    device: str
    dtype: str

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def prefill_and_decode(model, prompt: torch.Tensor, decode_tokens: int) -> tuple[float, float, torch.Tensor]:
    """One timed run: prefill ``prompt: (batch, length)``, then greedy one-token steps on the KV cache.

    Returns
    -------
    prefill_s, decode_s : float
        Wall seconds of the prefill and of the ``decode_tokens`` steps (CUDA synchronised).
    tokens : LongTensor, shape (batch, decode_tokens + 1)
        The greedy tokens: the prefill's prediction, then one per decode step.
    """
    device = prompt.device
    _sync(device)
    t0 = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    _sync(device)
    t1 = time.perf_counter()
    past = out.past_key_values
    nxt = out.logits[:, -1:].argmax(-1)  # (batch, 1)
    tokens = [nxt]
    for _ in range(decode_tokens):
        out = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        tokens.append(nxt)
    _sync(device)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, torch.cat(tokens, dim=1)


@torch.inference_mode()
def measure_speed(model, *, batch: int = 1, length: int = 128, decode_tokens: int = 32,
                  warmup: int = 1, repeats: int = 5, seed: int = 0) -> SpeedResult:
    """Measure prefill and decode throughput on random token ids.

    One repeat (:func:`prefill_and_decode`) = a prefill of a ``(batch, length)`` prompt with
    the KV cache on, then ``decode_tokens`` greedy one-token steps reusing the cache. The
    first ``warmup`` repeats
    are discarded; the medians of the rest are reported.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM, run on the device of its parameters.
    batch, length : int
        Prompt shape.
    decode_tokens : int
        New tokens generated per repeat (``length + decode_tokens`` must fit the model).
    warmup, repeats : int
        Untimed and timed repeats.
    seed : int
        Seed of the random prompt.
    """
    for name, v, lo in (("batch", batch, 1), ("length", length, 1), ("decode_tokens", decode_tokens, 1),
                        ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if v < lo:
            raise ValueError(f"{name}={v} must be at least {lo}")
    limit = model_max_length(model)
    if limit is not None and length + decode_tokens > limit:
        raise ValueError(f"length={length} + decode_tokens={decode_tokens} exceeds the model's maximum "
                         f"length {limit}; lower --length")
    device = _device_of(model)
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (batch, length), generator=gen).to(device)  # (batch, length)
    was_training = model.training
    model.eval()
    prefill_times, decode_times = [], []
    try:
        for rep in range(warmup + repeats):
            pre, dec, _ = prefill_and_decode(model, prompt, decode_tokens)
            if rep >= warmup:
                prefill_times.append(pre)
                decode_times.append(dec)
    finally:
        model.train(was_training)
    pre, dec = statistics.median(prefill_times), statistics.median(decode_times)
    return SpeedResult(prefill_tokens_per_s=batch * length / pre, decode_tokens_per_s=batch * decode_tokens / dec,
                       prefill_s=pre, decode_s=dec, batch=batch, length=length, decode_tokens=decode_tokens,
                       warmup=warmup, repeats=repeats, device=str(device),
                       dtype=str(next(model.parameters()).dtype).replace("torch.", ""))


def default_seq_len(model, preferred: int = 2048) -> int:
    """``preferred`` tokens, or the model's maximum length when that is shorter."""
    limit = model_max_length(model)
    return preferred if limit is None else min(preferred, limit)


def evaluate_model(model, tokenizer=None, *, ppl: Sequence[str | Path] = (), seq_len: int | None = None,
                   stride: int | None = None, ppl_batch_size: int = 1, tasks: Sequence[str] | str | None = None,
                   limit: int | None = None, data_dir: str | Path | None = None, task_batch_size: int = 8,
                   speed: bool = False, batch: int = 1, length: int = 128, decode_tokens: int = 32,
                   warmup: int = 1, repeats: int = 5, seed: int = 0) -> dict:
    """Evaluate one model: parameter counts always; perplexity, zero-shot tasks and speed on request.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers tokenizer, optional
        Needed for ``ppl`` and ``tasks``.
    ppl : sequence of paths
        Texts to measure perplexity on (:func:`perplexity`), each with ``seq_len`` (default
        2048, or the model's maximum length if shorter), ``stride`` and ``ppl_batch_size``.
    tasks : list or comma-separated str, optional
        Zero-shot tasks (:func:`miprun.zeroshot.evaluate_tasks`) with ``limit``, ``data_dir``
        and ``task_batch_size``.
    speed : bool
        Measure throughput (:func:`measure_speed`) with ``batch``, ``length``,
        ``decode_tokens``, ``warmup``, ``repeats``, ``seed``.

    Returns
    -------
    dict
        JSON-serialisable: ``parameters``, ``num_blocks`` (where known), ``perplexity``
        (keyed by file path), ``tasks`` (keyed by harness task name), ``speed``, and
        ``seconds`` spent on each part.
    """
    if (ppl or tasks) and tokenizer is None:
        raise ValueError("perplexity and tasks need the model's tokenizer; pass tokenizer=...")
    out: dict = {"parameters": count_parameters(model).to_dict(), "perplexity": {}, "tasks": {}, "speed": None,
                 "seconds": {}}
    n_blocks = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if isinstance(n_blocks, int):
        out["num_blocks"] = n_blocks
    if ppl:
        t0 = time.perf_counter()
        sl = default_seq_len(model) if seq_len is None else seq_len
        for path in ppl:
            out["perplexity"][str(path)] = perplexity(model, read_text(path), tokenizer=tokenizer, seq_len=sl,
                                                      stride=stride, batch_size=ppl_batch_size,
                                                      source=str(path)).to_dict()
        out["seconds"]["perplexity"] = time.perf_counter() - t0
    if tasks:
        from .zeroshot import evaluate_tasks
        t0 = time.perf_counter()
        res = evaluate_tasks(model, tokenizer, tasks, data_dir=data_dir, limit=limit, batch_size=task_batch_size,
                             seed=seed)
        out["tasks"] = {name: r.to_dict() for name, r in res.items()}
        out["seconds"]["tasks"] = time.perf_counter() - t0
    if speed:
        t0 = time.perf_counter()
        out["speed"] = measure_speed(model, batch=batch, length=length, decode_tokens=decode_tokens,
                                     warmup=warmup, repeats=repeats, seed=seed).to_dict()
        out["seconds"]["speed"] = time.perf_counter() - t0
    return out


def format_evaluation(result: dict) -> str:
    """A plain-text table of :func:`evaluate_model`'s result, for the terminal."""
    rows: list[tuple[str, str]] = []
    p = result["parameters"]
    if "num_blocks" in result:
        rows.append(("blocks", str(result["num_blocks"])))
    rows.append(("parameters (total)", f"{p['total']:,}"))
    rows.append(("parameters (per token)", f"{p['per_token']:,}"))
    for path, r in result.get("perplexity", {}).items():
        how = "non-overlapping" if r["stride"] is None else f"stride {r['stride']}"
        rows.append((f"perplexity {Path(path).name}",
                     f"{r['perplexity']:.4f}  ({r['tokens_scored']:,} tokens, seq_len {r['seq_len']}, {how})"))
    for name, r in result.get("tasks", {}).items():
        m = r["metrics"]
        parts = [f"{k} {m[k]:.4f}" for k in ("acc", "acc_norm", "perplexity") if k in m]
        rows.append((f"task {name}", ", ".join(parts) + f"  ({r['samples']}/{r['total']} samples)"))
    s = result.get("speed")
    if s:
        rows.append(("prefill tokens/s", f"{s['prefill_tokens_per_s']:,.1f}  (batch {s['batch']}, length {s['length']})"))
        rows.append(("decode tokens/s", f"{s['decode_tokens_per_s']:,.1f}  ({s['decode_tokens']} new tokens, "
                                        f"median of {s['repeats']} after {s['warmup']} warm-up, {s['device']} "
                                        f"{s['dtype']})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
