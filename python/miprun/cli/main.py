"""The ``miprun`` command: ``score``, ``prune``, ``demo`` (and ``eval`` / ``compare`` when installed).

User errors (bad options, missing files, refused output folders) print one line to stderr
and exit with status 2; nothing is written when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

try:
    from miprun.cli import evaluate as eval_cli
except ImportError:  # the evaluation commands are optional
    eval_cli = None

__all__ = ["main", "build_parser"]

ESTIMATOR_CHOICES = ("hist", "ksg", "gaussian", "cosine", "angular")
REDUCTION_CHOICES = ("pooled", "per_dim", "projection")
BINNING_CHOICES = ("quantile", "uniform")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
# Errors that mean "the input was wrong": shown as one line, exit status 2.
USER_ERRORS = (ValueError, OSError, ImportError)
_OPENED: list = []  # data-parallel groups joined by this command, left when it ends


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _bins(text: str):
    return int(text) if text.isdigit() else text


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.25, got {text!r}") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="local model folder or Hugging Face Hub id")
    p.add_argument("--calib", required=True, metavar="PATH",
                   help="calibration text: .txt, .json or .jsonl file, or a folder of them")
    p.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer folder or hub id (default: the model's own)")
    p.add_argument("--n-samples", type=_positive, default=128, help="calibration windows (default 128)")
    p.add_argument("--seq-len", type=_positive, default=None,
                   help="tokens per window (default 2048, or the model's maximum length if shorter)")
    p.add_argument("--estimator", choices=ESTIMATOR_CHOICES, default=None,
                   help="score: hist (default), ksg, gaussian; cosine/angular are the ShortGPT/Gromov baselines")
    p.add_argument("--reduction", choices=REDUCTION_CHOICES, default="pooled",
                   help="how hidden dimensions become one number (default pooled)")
    p.add_argument("--bins", type=_bins, default="auto", help="hist bins: 2..256 or auto/rice/sturges/sqrt")
    p.add_argument("--binning", choices=BINNING_CHOICES, default="quantile", help="hist binning (default quantile)")
    p.add_argument("--k", type=_positive, default=3, help="KSG neighbours (default 3)")
    p.add_argument("--max-samples", type=_positive, default=None, help="KSG subsample size")
    p.add_argument("--skip-first", type=_count, default=0,
                   help="leave out the first positions of every window (attention sinks; default 0)")
    p.add_argument("--max-run", type=_positive, default=None, help="longest run of blocks to score")
    p.add_argument("--seed", type=int, default=0, help="seeds the calibration windows and the estimator")
    p.add_argument("--batch-size", type=_positive, default=8, help="windows per forward call (default 8)")
    p.add_argument("--device", default=None, help="compute device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="dtype to load the model in")
    p.add_argument("--offload", action="store_true",
                   help="stream weights one block at a time from the checkpoint (models larger than memory)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code to run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong, and where to read the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``miprun`` command."""
    parser = _Parser(prog="miprun", description="Depth pruning of LLMs by mutual information.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("score", help="score every run of blocks and write the score table",
                       description="Score runs of blocks by MI between the hidden states around them (one pass).")
    _add_common(p)
    p.add_argument("--out", default=None, metavar="TABLE.json", help="write the table here (default: print it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_score)

    p = sub.add_parser("prune", help="remove the most redundant blocks and save the pruned model",
                       description="Score, select, remove blocks and save the pruned checkpoint with report.json.")
    _add_common(p)
    how_many = p.add_mutually_exclusive_group(required=True)
    how_many.add_argument("--num-blocks", type=_count, default=None, help="number of blocks to remove")
    how_many.add_argument("--ratio", type=_fraction, default=None, help="fraction of the blocks to remove")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the pruned model")
    p.add_argument("--selector", default="fast_block_select",
                   choices=("fast_block_select", "optimal", "exhaustive", "greedy", "shortgpt", "gromov"),
                   help="how blocks are chosen (default fast_block_select, the paper's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    p.set_defaults(func=run_prune)

    p = sub.add_parser("demo", help="prune a small random model with planted redundant blocks (no download)",
                       description="Build a small Llama with near-identity blocks planted, prune it, reload it, "
                                   "generate, and show that the planted blocks were found.")
    p.add_argument("--out", default=None, metavar="DIR", help="where to save the pruned model (default: a temp folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--seed", type=int, default=0, help="seeds the model, the text and the estimator")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_demo)

    if eval_cli is not None:
        eval_cli.register(sub)
    return parser


def _quiet_libraries(quiet: bool) -> None:
    """transformers' own progress bars and warnings follow --quiet / non-terminal stderr."""
    from miprun.util.progress import progress_enabled
    if not progress_enabled(not quiet):
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()


def _data_parallel(args):
    """The data-parallel run ``torchrun`` started (``WORLD_SIZE`` > 1), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from miprun.scoring.distributed import DataParallel
    dp = DataParallel.from_env(device=args.device)
    _OPENED.append(dp)
    return dp


def _device(arg):
    if arg is not None:
        return arg
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_score(args) -> int:
    """``miprun score``: write (or print) the score table."""
    from miprun.calibration.windows import window_length
    from miprun.models.loading import inspect_model, load_model
    from miprun.pipeline.prune import check_vocabulary, model_tokenizer
    from miprun.scoring.score import resolve_calibration, score_blocks
    _quiet_libraries(args.quiet)
    estimator = args.estimator or "hist"
    info = inspect_model(args.model, trust_remote_code=args.trust_remote_code, require_family=False)
    out = _check_table_out(args.out, args.overwrite, info.folder)
    tokenizer = model_tokenizer(args.tokenizer or info.name, trust_remote_code=args.trust_remote_code)
    ids, calib = resolve_calibration(args.calib, tokenizer=tokenizer, n_samples=args.n_samples,
                                     seq_len=window_length(args.seq_len, info.config), seed=args.seed)
    check_vocabulary(ids, info.config)
    dp = _data_parallel(args)
    device = dp.device if dp is not None else _device(args.device)
    score_ids, shard_kwargs = ids, {}
    if dp is not None:
        shard = dp.shard(ids, skip_first=args.skip_first)
        score_ids = shard.input_ids
        shard_kwargs = dict(reducer=dp.reducer, token_offset=shard.token_offset, total_tokens=shard.total_tokens)
    model = info.folder if args.offload else load_model(args.model, device=device, dtype=args.dtype,
                                                   trust_remote_code=args.trust_remote_code)
    table = score_blocks(model, score_ids, estimator=estimator, reduction=args.reduction, max_run=args.max_run,
                         bins=args.bins, binning=args.binning, k=args.k, max_samples=args.max_samples,
                         seed=args.seed, skip_first=args.skip_first, batch_size=args.batch_size, device=device,
                         dtype=args.dtype, offload=args.offload, progress=not args.quiet,
                         trust_remote_code=args.trust_remote_code, **shard_kwargs)
    table.settings["calibration"] = calib
    table.settings["model"] = info.name
    if dp is not None:
        table.settings["world_size"] = dp.world_size
        if not dp.is_main:
            return 0  # every process holds the same table; the main one reports it
    if out is None:
        print(json.dumps(_jsonable(table.to_dict()), indent=2))
    else:
        _write_atomic(out, table.to_dict())
        _print_table(table)
        print(f"score table written to {out}")
    return 0


def run_prune(args) -> int:
    """``miprun prune``: score, select, remove, save; print the plan."""
    from miprun.pipeline.prune import model_tokenizer, prune
    _quiet_libraries(args.quiet)
    tokenizer = None
    if args.tokenizer is not None:
        tokenizer = model_tokenizer(args.tokenizer, trust_remote_code=args.trust_remote_code)
    dp = _data_parallel(args)
    result = prune(args.model, args.calib, tokenizer=tokenizer, data_parallel=dp, num_blocks=args.num_blocks, ratio=args.ratio, estimator=args.estimator,
                   reduction=args.reduction, selector=args.selector, out_dir=args.out, overwrite=args.overwrite,
                   seed=args.seed, offload=args.offload, n_samples=args.n_samples, seq_len=args.seq_len,
                   max_run=args.max_run, bins=args.bins, binning=args.binning, k=args.k,
                   max_samples=args.max_samples, skip_first=args.skip_first, batch_size=args.batch_size,
                   device=dp.device if dp is not None else _device(args.device), dtype=args.dtype,
                   trust_remote_code=args.trust_remote_code, plots=not args.no_plots, progress=not args.quiet)
    if dp is not None and not dp.is_main:
        return 0  # the main process prints and writes
    _print_table(result.table)
    plan = result.plan
    print(f"removed blocks {plan.removed} of {plan.num_blocks} (selector {plan.selector}, estimator "
          f"{result.table.estimator}, {plan.evaluations} run scores read)")
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
    print(f"pruned model written to {result.out_dir} (report: {Path(result.out_dir) / 'report.json'})")
    return 0


def run_demo(args) -> int:
    """``miprun demo``: see :mod:`miprun.demo`."""
    from miprun.pipeline.demo import run_demo as demo
    _quiet_libraries(args.quiet)
    result = demo(out_dir=args.out, overwrite=args.overwrite, seed=args.seed, progress=not args.quiet)
    return 0 if result.found_planted else 1


def _print_table(table) -> None:
    single = table.single_block()
    print(f"single-block scores ({table.estimator}):")
    print("  " + "  ".join(f"{i}:{v:.4f}" for i, v in enumerate(single)))


def _check_table_out(out, overwrite: bool, folder) -> Path | None:
    if out is None:
        return None
    path = Path(out).expanduser().absolute()
    if folder is not None and (path == folder or folder in path.resolve().parents):
        raise ValueError(f"--out {path} is inside the input model folder {folder}; the input is never written to")
    if path.exists() and not overwrite:
        raise ValueError(f"--out {path} already exists; pass --overwrite to replace it")
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name such as table.json")
    if not path.parent.is_dir():
        raise ValueError(f"--out {path}: folder {path.parent} does not exist")
    return path


def _jsonable(obj):
    from miprun.output.report import to_jsonable
    return to_jsonable(obj)


def _write_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the ``miprun`` command; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the error
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"miprun: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("miprun: interrupted", file=sys.stderr)
        return 130
    finally:
        while _OPENED:
            _OPENED.pop().close()


if __name__ == "__main__":
    sys.exit(main())
