"""``miprun compare``: every selector on the same model and calibration, each pruned model evaluated."""

from __future__ import annotations

import argparse
from pathlib import Path

from miprun.calibration.windows import load_calibration
from miprun.cli.common import add_model_options, non_negative, positive
from miprun.cli.evaluate import add_eval_options, load
from miprun.evaluate.summary import default_seq_len, read_text, tokenize_text
from miprun.evaluate.zeroshot import resolve_data_dir, resolve_task_names
from miprun.models.loading import inspect_model
from miprun.output.guard import check_output_dir
from miprun.pipeline.compare import check_counts, compare, parse_variants
from miprun.pipeline.compare_report import to_markdown, write_outputs
from miprun.util.versions import versions

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="every selector on the same model and calibration, each pruned model evaluated",
        description="Score the model once per estimator, run every selector (MI-PRUN's Fast-Block-Select for "
                    "each estimator and reduction, optimal, greedy MI, ShortGPT, Gromov, random, and the "
                    "exhaustive perplexity oracle when the subsets are few), prune a copy with each plan and "
                    "evaluate it the same way. Writes compare.md, compare.json and compare.png; with several "
                    "--num-remove counts, also perplexity (per evaluation text) and accuracy (per task) against "
                    "the share of blocks removed, one line per selector.")
    add_model_options(p, offload=False)
    p.add_argument("--num-remove", "--num-blocks", dest="num_remove", type=counts, required=True, metavar="N[,N...]",
                   help="blocks to remove, or several counts separated by commas (3,6,9): every table is scored "
                        "once and every selector runs at every count (--num-blocks is the older name)")
    p.add_argument("--calib", required=True, metavar="PATH", help="calibration text (file, folder or dataset)")
    p.add_argument("--n-samples", type=positive, default=128, help="calibration windows")
    p.add_argument("--calib-seq-len", type=positive, default=None,
                   help="calibration window in tokens (default: --seq-len's default)")
    p.add_argument("--eval-text", action="append", default=[], metavar="PATH",
                   help="held-out text for perplexity (repeatable; default: the calibration file, which then "
                        "measures fit to the calibration text rather than held-out perplexity)")
    add_eval_options(p)
    p.add_argument("--estimators", default=None,
                   help="comma-separated estimator:reduction pairs for Fast-Block-Select (default: all of "
                        "hist:pooled, hist:per_dim, ksg:pooled, ksg:per_dim, ksg:projection, gaussian:pooled, "
                        "gaussian:per_dim)")
    p.add_argument("--heal", default="", metavar="HEAL[,HEAL]",
                   help="also evaluate every selector's plan healed: scale, linear or both (scale,linear), fitted "
                        "on the calibration tokens as prune --heal does; one more row per heal")
    p.add_argument("--oracle-limit", type=non_negative, default=64,
                   help="run the exhaustive perplexity oracle when there are at most this many subsets (0: never)")
    p.add_argument("--max-samples", type=positive, default=None,
                   help="token rows subsampled for ksg (default: the estimator's own default)")
    p.add_argument("--batch-size", type=positive, default=8, help="calibration samples per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of calibration sampling, ksg and the random baseline")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: ./compare-<model name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier comparison at --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def counts(text: str) -> list[int]:
    """``"3,6,9"`` -> ``[3, 6, 9]``: whole numbers, each at least 1, none twice."""
    items = [t.strip() for t in text.split(",")]
    out = []
    for item in items:
        try:
            out.append(positive(item))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{item!r} in {text!r}: {exc}") from None
    try:
        return check_counts(out)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _heals(text: str) -> list[str]:
    """``"scale,linear"`` -> the heals; ``""`` or ``"none"`` -> none."""
    names = [t.strip() for t in text.split(",") if t.strip() and t.strip() != "none"]
    bad = [n for n in names if n not in ("scale", "linear")]
    if bad:
        raise ValueError(f"--heal {text!r}: {', '.join(bad)} is not a heal; choose from scale, linear")
    return names


def _check_inputs(args) -> tuple[Path, list[str], tuple]:
    """Every input and the output folder, checked before the model loads."""
    _heals(args.heal)
    info = inspect_model(args.model, trust_remote_code=args.trust_remote_code, require_family=False)  # config only
    check_counts(args.num_remove, info.num_blocks)
    texts = args.eval_text or [args.calib]
    for t in texts:
        if not Path(t).is_file():
            raise ValueError(f"evaluation text {t} is not a file; pass --eval-text PATH")
    out_dir = Path(args.out) if args.out else Path.cwd() / f"compare-{Path(str(args.model)).name}"
    protect = (args.model, args.calib, *texts)
    check_output_dir(out_dir, overwrite=args.overwrite, protect=protect)
    if args.tasks and any(n.startswith("miprun_") for n in resolve_task_names(args.tasks)):
        resolve_data_dir(args.data_dir)
    return out_dir, texts, protect


def run(args) -> int:
    variants = parse_variants(args.estimators)
    out_dir, texts, protect = _check_inputs(args)
    model, tokenizer = load(args)
    seq_len = args.seq_len or default_seq_len(model)
    ids = load_calibration(args.calib, tokenizer, n_samples=args.n_samples, seq_len=args.calib_seq_len or seq_len,
                           seed=args.seed)
    eval_ids = {str(t): tokenize_text(read_text(t), tokenizer) for t in texts}
    log = None if args.quiet else print
    if not args.eval_text and log:
        log(f"note: no --eval-text; perplexity is measured on the calibration file {args.calib} (not held out)")
    num_remove = args.num_remove[0] if len(args.num_remove) == 1 else args.num_remove
    result = compare(model, tokenizer, ids, num_remove, eval_ids=eval_ids, seq_len=seq_len, stride=args.stride,
                     ppl_batch_size=args.ppl_batch_size, variants=variants, tasks=args.tasks, limit=args.limit,
                     data_dir=args.data_dir, task_batch_size=args.task_batch_size, oracle_limit=args.oracle_limit,
                     seed=args.seed, max_samples=args.max_samples, batch_size=args.batch_size,
                     heals=_heals(args.heal), log=log)
    result.settings.update({"model": str(args.model), "calibration": str(args.calib),
                            "held_out": bool(args.eval_text)})
    paths = write_outputs(result, out_dir, extra={"versions": versions()}, overwrite=args.overwrite,
                          protect=protect)
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
