"""Evidence about a (pruned) model: perplexity, parameter counts and measured speed, together.

The measurements live in :mod:`miprun.perplexity` and :mod:`miprun.speed`; this module runs
the ones asked for and formats them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from miprun.evaluate.perplexity import (PerplexityResult, Span, model_max_length, perplexity, read_text, tokenize_text, window_spans)
from miprun.evaluate.speed import SpeedResult, measure_speed, prefill_and_decode
from miprun.evaluate.zeroshot import evaluate_tasks
from miprun.models.parameters import ParameterCount, count_parameters

__all__ = [
    "Span", "PerplexityResult", "ParameterCount", "SpeedResult",
    "read_text", "tokenize_text", "window_spans", "perplexity", "count_parameters",
    "measure_speed", "prefill_and_decode", "model_max_length", "default_seq_len", "evaluate_model", "format_evaluation",
]


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
