"""The ``miprun eval`` and ``miprun compare`` subcommands.

:func:`register` adds them to the subparsers of :mod:`miprun.cli`. Each sets
``func(args) -> int``; user errors raise ``ValueError`` with the message to show.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

__all__ = ["register", "run_eval", "run_compare", "write_json"]


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _non_negative(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {v}")
    return v


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model folder (or Hugging Face Hub id)")
    p.add_argument("--device", default=None, help="device to run on (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="auto", help="auto (the checkpoint's), float32, bfloat16 or float16")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code to run")


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("perplexity")
    g.add_argument("--seq-len", type=_positive, default=None,
                   help="perplexity window in tokens (default 2048, or the model's maximum length if shorter)")
    g.add_argument("--stride", type=_positive, default=None,
                   help="sliding-window stride: score only the tokens each window adds (default: "
                        "non-overlapping windows, incomplete tail dropped)")
    g.add_argument("--ppl-batch-size", type=_positive, default=1, help="windows per forward pass")
    g = p.add_argument_group("zero-shot tasks (lm-evaluation-harness)")
    g.add_argument("--tasks", default=None,
                   help="comma-separated tasks, e.g. piqa,arc_easy,arc_challenge,winogrande,boolq,hellaswag,copa "
                        "(miprun's offline copies; 'lm_eval:NAME' asks for the harness's own task)")
    g.add_argument("--limit", type=_positive, default=None, help="only the first N documents of each task")
    g.add_argument("--data-dir", default=None,
                   help="folder of the benchmark files (default: $MIPRUN_DATA/bench or ../shared/data/bench)")
    g.add_argument("--task-batch-size", type=_positive, default=8, help="harness batch size")


def register(subparsers) -> None:
    """Add ``eval`` and ``compare`` to the argparse subparsers of the ``miprun`` command."""
    p = subparsers.add_parser(
        "eval", help="perplexity, zero-shot accuracy, parameter counts and speed of a model",
        description="Evaluate a model: parameter counts always; perplexity (--ppl), zero-shot tasks (--tasks) "
                    "and measured speed (--speed) on request. Prints a table; --json writes the numbers.")
    _add_model_options(p)
    p.add_argument("--ppl", action="append", default=[], metavar="PATH",
                   help="text file to measure perplexity on (read as is, except that <|endoftext|> document markers "
                        "become blank lines; .json/.jsonl: 'text' fields); repeat for several")
    _add_eval_options(p)
    g = p.add_argument_group("speed")
    g.add_argument("--speed", action="store_true", help="measure prefill and decode tokens/s")
    g.add_argument("--batch", type=_positive, default=1, help="sequences per forward pass for --speed")
    g.add_argument("--length", type=_positive, default=128, help="prompt tokens for --speed")
    g.add_argument("--decode-tokens", type=_positive, default=32, help="new tokens per decode run for --speed")
    g.add_argument("--warmup", type=_non_negative, default=1, help="untimed runs before measuring")
    g.add_argument("--repeats", type=_positive, default=5, help="timed runs (the median is reported)")
    p.add_argument("--seed", type=int, default=0, help="seed of the speed prompt and the harness")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser(
        "compare", help="every selector on the same model and calibration, each pruned model evaluated",
        description="Score the model once per estimator, run every selector (MI-PRUN's Fast-Block-Select for "
                    "each estimator and reduction, optimal, greedy MI, ShortGPT, Gromov, random, and the "
                    "exhaustive perplexity oracle when the subsets are few), prune a copy with each plan and "
                    "evaluate it the same way. Writes compare.md, compare.json and compare.png.")
    _add_model_options(p)
    p.add_argument("--num-blocks", type=_positive, required=True, help="blocks to remove")
    p.add_argument("--calib", required=True, metavar="PATH", help="calibration text (file, folder or dataset)")
    p.add_argument("--n-samples", type=_positive, default=128, help="calibration windows")
    p.add_argument("--calib-seq-len", type=_positive, default=None,
                   help="calibration window in tokens (default: --seq-len's default)")
    p.add_argument("--eval-text", action="append", default=[], metavar="PATH",
                   help="held-out text for perplexity (repeatable; default: the calibration file, which then "
                        "measures fit to the calibration text rather than held-out perplexity)")
    _add_eval_options(p)
    p.add_argument("--estimators", default=None,
                   help="comma-separated estimator:reduction pairs for Fast-Block-Select (default: all of "
                        "hist:pooled, hist:per_dim, ksg:pooled, ksg:per_dim, ksg:projection, gaussian:pooled, "
                        "gaussian:per_dim)")
    p.add_argument("--oracle-limit", type=_non_negative, default=64,
                   help="run the exhaustive perplexity oracle when there are at most this many subsets (0: never)")
    p.add_argument("--max-samples", type=_positive, default=None,
                   help="token rows subsampled for ksg (default: the estimator's own default)")
    p.add_argument("--batch-size", type=_positive, default=8, help="calibration samples per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of calibration sampling, ksg and the random baseline")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: ./compare-<model name>)")
    p.add_argument("--overwrite", action="store_true", help="replace the files in an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run_compare)


def _device(name: str | None) -> str:
    if name:
        return name
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def load(args):
    """Model and tokenizer named by the parsed arguments."""
    from miprun.models.loading import load_model, load_tokenizer
    model = load_model(args.model, device=_device(args.device), dtype=args.dtype,
                       trust_remote_code=args.trust_remote_code)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    return model, tokenizer


def write_json(path: str | Path, data) -> Path:
    """Write JSON atomically (a temporary file renamed into place)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def _check_inputs(args) -> None:
    for path in args.ppl:
        if not Path(path).is_file():
            raise ValueError(f"--ppl {path}: no such file")
    if args.stride is not None and args.seq_len is not None and args.stride > args.seq_len:
        raise ValueError(f"--stride {args.stride} is larger than --seq-len {args.seq_len}; use a stride <= seq-len")
    if args.tasks is not None:
        from miprun.evaluate.zeroshot import resolve_data_dir, resolve_task_names
        names = resolve_task_names(args.tasks)
        if any(n.startswith("miprun_") for n in names):
            resolve_data_dir(args.data_dir)


def run_eval(args) -> int:
    """``miprun eval``: evaluate, print the table, optionally write JSON."""
    from miprun.evaluate.summary import evaluate_model, format_evaluation
    _check_inputs(args)  # before loading the model: fail fast on typos
    model, tokenizer = load(args)
    result = evaluate_model(model, tokenizer, ppl=args.ppl, seq_len=args.seq_len, stride=args.stride,
                            ppl_batch_size=args.ppl_batch_size, tasks=args.tasks, limit=args.limit,
                            data_dir=args.data_dir, task_batch_size=args.task_batch_size, speed=args.speed,
                            batch=args.batch, length=args.length, decode_tokens=args.decode_tokens,
                            warmup=args.warmup, repeats=args.repeats, seed=args.seed)
    result = {"model": str(args.model), **result, "versions": versions()}
    print(format_evaluation(result))
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0


def versions() -> dict:
    """Versions of the libraries behind the numbers."""
    import platform

    import torch
    import transformers

    from miprun import __version__
    out = {"miprun": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    try:
        import lm_eval
        out["lm_eval"] = getattr(lm_eval, "__version__", "unknown")
    except ImportError:
        pass
    if torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_device_name(0)
    return out


def run_compare(args) -> int:
    """``miprun compare``: see :func:`miprun.compare.compare`."""
    from miprun.pipeline.compare import compare_cli
    return compare_cli(args)
