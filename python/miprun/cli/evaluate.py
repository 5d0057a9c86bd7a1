"""``miprun eval``: parameter counts, perplexity, zero-shot accuracy and speed of a model."""

from __future__ import annotations

from pathlib import Path

from miprun.util.devices import resolve_device
from miprun.cli.common import add_model_options, non_negative, positive
from miprun.evaluate.summary import evaluate_model, format_evaluation
from miprun.evaluate.zeroshot import resolve_data_dir, resolve_task_names
from miprun.hidden.device_map import load_with_device_map
from miprun.hidden.sources import parse_max_memory
from miprun.models.loading import load_model, load_tokenizer
from miprun.output.guard import check_output_file, write_output_json
from miprun.util.versions import versions

__all__ = ["register", "run", "add_eval_options", "check_eval_inputs", "load"]


def add_eval_options(p) -> None:
    """Perplexity and zero-shot options, shared with ``compare``."""
    g = p.add_argument_group("perplexity")
    g.add_argument("--seq-len", type=positive, default=None,
                   help="perplexity window in tokens (default 2048, or the model's maximum length if shorter)")
    g.add_argument("--stride", type=positive, default=None,
                   help="sliding-window stride: score only the tokens each window adds (default: "
                        "non-overlapping windows, incomplete tail dropped)")
    g.add_argument("--ppl-batch-size", type=positive, default=1, help="windows per forward pass")
    g = p.add_argument_group("zero-shot tasks (lm-evaluation-harness)")
    g.add_argument("--tasks", default=None,
                   help="comma-separated tasks, e.g. piqa,arc_easy,arc_challenge,winogrande,boolq,hellaswag,copa "
                        "(miprun's offline copies; 'lm_eval:NAME' asks for the harness's own task)")
    g.add_argument("--limit", type=positive, default=None, help="only the first N documents of each task")
    g.add_argument("--data-dir", default=None,
                   help="folder of the benchmark files (default: $MIPRUN_DATA/bench or ../shared/data/bench)")
    g.add_argument("--task-batch-size", type=positive, default=8, help="harness batch size")


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="perplexity, zero-shot accuracy, parameter counts and speed of a model",
        description="Evaluate a model: parameter counts always; perplexity (--ppl), zero-shot tasks (--tasks) "
                    "and measured speed (--speed) on request. Prints a table; --json writes the numbers.")
    add_model_options(p, offload=False)
    p.add_argument("--ppl", action="append", default=[], metavar="PATH",
                   help="text file to measure perplexity on (read as is, except that <|endoftext|> document markers "
                        "become blank lines; .json/.jsonl: 'text' fields); repeat for several")
    add_eval_options(p)
    g = p.add_argument_group("speed")
    g.add_argument("--speed", action="store_true", help="measure prefill and decode tokens/s")
    g.add_argument("--batch", type=positive, default=1, help="sequences per forward pass for --speed")
    g.add_argument("--length", type=positive, default=128, help="prompt tokens for --speed")
    g.add_argument("--decode-tokens", type=positive, default=32, help="new tokens per decode run for --speed")
    g.add_argument("--warmup", type=non_negative, default=1, help="untimed runs before measuring")
    g.add_argument("--repeats", type=positive, default=5, help="timed runs (the median is reported)")
    p.add_argument("--seed", type=int, default=0, help="seed of the speed prompt and the harness")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace a results file miprun wrote earlier at --json")
    p.set_defaults(func=run)


def load(args):
    """Model and tokenizer named by the parsed arguments (device map and memory limits included)."""
    if args.device_map is not None:
        model = load_with_device_map(args.model, device_map=args.device_map, dtype=args.dtype,
                                     max_memory=None if args.max_memory is None else parse_max_memory(args.max_memory),
                                     trust_remote_code=args.trust_remote_code)
    else:
        if args.max_memory is not None:
            raise ValueError("--max-memory limits a device map: give --device-map too")
        model = load_model(args.model, device=resolve_device(args.device), dtype=args.dtype,
                           trust_remote_code=args.trust_remote_code)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    return model, tokenizer


def check_eval_inputs(args) -> None:
    """Every input checked before the model loads: fail fast on typos."""
    for path in args.ppl:
        if not Path(path).is_file():
            raise ValueError(f"--ppl {path}: no such file")
    if args.stride is not None and args.seq_len is not None and args.stride > args.seq_len:
        raise ValueError(f"--stride {args.stride} is larger than --seq-len {args.seq_len}; use a stride <= seq-len")
    if args.tasks is not None and any(n.startswith("miprun_") for n in resolve_task_names(args.tasks)):
        resolve_data_dir(args.data_dir)


def run(args) -> int:
    check_eval_inputs(args)
    protect = (args.model, *args.ppl)
    if args.json:
        check_output_file(args.json, overwrite=args.overwrite, protect=protect)
    model, tokenizer = load(args)
    result = evaluate_model(model, tokenizer, ppl=args.ppl, seq_len=args.seq_len, stride=args.stride,
                            ppl_batch_size=args.ppl_batch_size, tasks=args.tasks, limit=args.limit,
                            data_dir=args.data_dir, task_batch_size=args.task_batch_size, speed=args.speed,
                            batch=args.batch, length=args.length, decode_tokens=args.decode_tokens,
                            warmup=args.warmup, repeats=args.repeats, seed=args.seed)
    result = {"model": str(args.model), **result, "versions": versions()}
    print(format_evaluation(result))
    if args.json:
        path = write_output_json(args.json, result, kind="eval", overwrite=args.overwrite, protect=protect)
        print(f"wrote {path}")
    return 0
