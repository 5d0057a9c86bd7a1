"""``miprun compare``: every selector on the same model and calibration, each pruned model evaluated."""

from __future__ import annotations

import argparse
from pathlib import Path

from miprun.calibration.windows import load_calibration
from miprun.cli.common import (add_model_options, fraction, join_data_parallel, non_negative, positive,
                               quiet_libraries)
from miprun.cli.evaluate import add_eval_options
from miprun.evaluate.summary import default_seq_len, read_text, tokenize_text
from miprun.evaluate.zeroshot import resolve_data_dir, resolve_task_names
from miprun.hidden.sources import open_source, parse_max_memory
from miprun.models.blocks import text_config
from miprun.models.families import bos_first
from miprun.models.loading import inspect_model, load_tokenizer
from miprun.pipeline.compare_eval import text_windows
from miprun.selection.options import CRITERIA, DEFAULT_CRITERION
from miprun.util.devices import resolve_device
from miprun.output.guard import check_output_dir
from miprun.pipeline.compare import check_counts, compare, measured_spec, parse_variants
from miprun.pipeline.compare_report import to_markdown, write_outputs
from miprun.util.versions import versions

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="every selector on the same model and calibration, each pruned model evaluated",
        description="Score the model once per estimator, run every selector (MI-PRUN's Fast-Block-Select for "
                    "each estimator and reduction, optimal, greedy MI, ShortGPT, Gromov, random, prune's default "
                    "(verified and refined on held-back windows), SLEB, and the exhaustive perplexity oracle when "
                    "the subsets are few), and measure every plan the same way: perplexity and KL divergence from "
                    "the unpruned model on each evaluation text, all plans in shared sweeps over the blocks (in "
                    "memory, --offload or --device-map); zero-shot tasks on a pruned copy of the model in memory. "
                    "Writes compare.md, compare.json and compare.png; with several --num-remove counts, also "
                    "perplexity (per evaluation text) and accuracy (per task) against the share of blocks "
                    "removed, one line per selector.")
    add_model_options(p)
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
                        "gaussian:per_dim; none: only the baselines and the measured rows)")
    p.add_argument("--heal", default="", metavar="HEAL[,HEAL]",
                   help="also evaluate every selector's plan healed: scale, linear or both (scale,linear), fitted "
                        "on the calibration tokens as prune --heal does; one more row per heal")
    p.add_argument("--measured", default="default,sleb", metavar="ROW[,ROW]",
                   help="rows chosen by measuring plans on the held-back calibration windows: default (prune's "
                        "default; default:kl or default:loss names its criterion, :full turns screening off), sleb; "
                        "default: default,sleb; none: no measured row")
    p.add_argument("--criterion", choices=CRITERIA, default=DEFAULT_CRITERION,
                   help=f"what the default row's verify and refine rank plans by (default {DEFAULT_CRITERION})")
    p.add_argument("--held-back", type=fraction, default=0.25, metavar="F",
                   help="share of the calibration windows held back for the measured rows and the heals' checks")
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


def _measured(text: str) -> tuple[str, ...]:
    """``"default,sleb"`` -> the measured rows; ``"none"`` or ``""`` -> none."""
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip() and t.strip() != "none"))
    for name in names:
        measured_spec(name, DEFAULT_CRITERION)  # refuses a name that is not a measured row, saying which are
    return names


def _check_inputs(args):
    """Every input and the output folder, checked before the model loads."""
    _heals(args.heal)
    _measured(args.measured)
    info = inspect_model(args.model, trust_remote_code=args.trust_remote_code, require_family=False)  # config only
    check_counts(args.num_remove, info.num_blocks)
    texts = args.eval_text or [args.calib]
    for t in texts:
        if not Path(t).is_file():
            raise ValueError(f"evaluation text {t} is not a file; pass --eval-text PATH")
    if (args.tasks or args.stride is not None) and (args.offload or args.device_map is not None):
        raise ValueError(f"{'--tasks' if args.tasks else '--stride'} evaluates a pruned copy of the model held in "
                         f"memory: drop --offload / --device-map, or drop {'--tasks' if args.tasks else '--stride'}")
    out_dir = Path(args.out) if args.out else Path.cwd() / f"compare-{Path(str(args.model)).name}"
    protect = (args.model, args.calib, *texts)
    check_output_dir(out_dir, overwrite=args.overwrite, protect=protect)
    if args.tasks and any(n.startswith("miprun_") for n in resolve_task_names(args.tasks)):
        resolve_data_dir(args.data_dir)
    return out_dir, texts, protect, info


def _open(args, info, dp):
    """The block source every step of the comparison reads (in memory, streamed or device-mapped)."""
    device = None if args.device_map is not None else str(dp.device) if dp is not None else \
        str(resolve_device(args.device))
    max_memory = None if args.max_memory is None else parse_max_memory(args.max_memory)
    return open_source(args.model, offload=args.offload, device_map=args.device_map, max_memory=max_memory,
                       device=device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                       n_samples=args.n_samples, seq_len=args.calib_seq_len or args.seq_len or 2048,
                       batch_size=args.batch_size, config=info.config)


def run(args) -> int:
    quiet_libraries(args.quiet)
    variants = parse_variants(args.estimators)
    out_dir, texts, protect, info = _check_inputs(args)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    dp = join_data_parallel(args.device)
    source = _open(args, info, dp)
    seq_len = args.seq_len or default_seq_len(source)
    ids = load_calibration(args.calib, tokenizer, n_samples=args.n_samples, seq_len=args.calib_seq_len or seq_len,
                           seed=args.seed)
    eval_ids = {str(t): tokenize_text(read_text(t), tokenizer) for t in texts}
    if bos_first(text_config(info.config)) and tokenizer.bos_token_id is not None:  # every window starts with BOS
        eval_ids = {t: text_windows(ids, seq_len, tokenizer.bos_token_id) for t, ids in eval_ids.items()}
    main = dp is None or dp.is_main
    log = None if args.quiet or not main else print
    if not args.eval_text and log:
        log(f"note: no --eval-text; perplexity is measured on the calibration file {args.calib} (not held out)")
    num_remove = args.num_remove[0] if len(args.num_remove) == 1 else args.num_remove
    result = compare(source, tokenizer, ids, num_remove, eval_ids=eval_ids, seq_len=seq_len, stride=args.stride,
                     ppl_batch_size=args.ppl_batch_size, variants=variants, tasks=args.tasks, limit=args.limit,
                     data_dir=args.data_dir, task_batch_size=args.task_batch_size, oracle_limit=args.oracle_limit,
                     seed=args.seed, max_samples=args.max_samples, batch_size=args.batch_size,
                     heals=_heals(args.heal), measured=_measured(args.measured), criterion=args.criterion,
                     held_back=args.held_back, data_parallel=dp, log=log)
    if not main:
        return 0  # the main process writes the one output
    result.settings.update({"model": str(args.model), "calibration": str(args.calib),
                            "held_out": bool(args.eval_text)})
    paths = write_outputs(result, out_dir, extra={"versions": versions()}, overwrite=args.overwrite,
                          protect=protect)
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
