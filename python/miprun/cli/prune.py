"""``miprun prune``: score, select, remove, save; or re-run the plan a report records (``--from-report``)."""

from __future__ import annotations

import dataclasses
import warnings

from miprun.util.devices import resolve_device
from miprun.cli.common import (add_calibration_options, add_model_options, add_scoring_options, count,
                               execution_settings, fraction, join_data_parallel, non_negative_float, positive_float,
                               quiet_libraries, ratio_limit, verify_count)
from miprun.cli.output import print_plan, print_single_block
from miprun.models.loading import load_tokenizer
from miprun.heal.options import DEFAULT_LR, DEFAULT_TUNE_STEPS, FITS, METHODS, OBJECTIVES
from miprun.output.options import FORMATS
from miprun.pipeline.options import PruneOptions, ReportedRun
from miprun.pipeline.prune import prune
from miprun.selection.options import AUTO_REFINE, CONFIRM, CRITERIA, DEFAULT_CRITERION
from miprun.selection.select import SELECTORS

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("prune", help="remove the most redundant blocks and save the pruned model",
                       description="Score, select, remove blocks and save the pruned checkpoint with report.json. "
                                   "With --from-report, re-run the plan an earlier report.json records (its "
                                   "model, calibration and options; --out, --overwrite, --device, --quiet and "
                                   "--no-plots from the command line).")
    add_model_options(p)
    add_calibration_options(p, required=False)
    add_scoring_options(p)
    how_many = p.add_mutually_exclusive_group()
    how_many.add_argument("--num-remove", "--num-blocks", dest="num_remove", type=count, default=None,
                          help="number of blocks to remove (--num-blocks is the older name)")
    how_many.add_argument("--ratio", type=fraction, default=None, help="fraction of the blocks to remove")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the pruned model")
    _add_selection_options(p)
    _add_heal_options(p)
    p.add_argument("--max-ppl-ratio", type=ratio_limit, default=50.0, metavar="R",
                   help="refuse to write a pruned model whose perplexity on the held-back calibration windows is "
                        "over R times the unpruned model's (default 50; inf: no check)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier miprun output (or an empty folder) at --out")
    p.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="hf (default): a Hugging Face checkpoint; gguf (GGUF input only): a GGUF file holding the "
                        "input's kept blocks as they are (same quantisation), renumbered")
    p.add_argument("--from-report", default=None, metavar="REPORT.json",
                   help="re-run the plan an earlier report.json records (MODEL may be '-' to take it from there)")
    p.set_defaults(func=run)


def _add_selection_options(p) -> None:
    """How the plan is chosen: the selector, and how candidate plans are measured."""
    p.add_argument("--selector", default="fast_block_select", choices=SELECTORS,
                   help="how blocks are chosen (default fast_block_select, the paper's; sleb: by measured loss, "
                        "every remaining block tried at every step, one sweep per step)")
    p.add_argument("--verify", type=verify_count, default="auto", metavar="K",
                   help="measure the selector's K best plans (and, unless --no-portfolio, the other cheap "
                        "selectors' plans) on the held-back calibration windows (--held-back) and keep the best; "
                        "0: off (the paper's method: --verify 0). Default auto: 2 (in memory, --offload and "
                        "--device-map alike)")
    p.add_argument("--refine", type=verify_count, default="auto", metavar="R",
                   help="with --verify: up to R rounds of measured one-block swaps along the chosen plan's runs "
                        "(each round measures the plan with each block next to a run also removed and with each "
                        f"removed block put back, then the 2 best swaps); 0: off. Default auto: {AUTO_REFINE} "
                        "where --verify runs")
    p.add_argument("--criterion", choices=CRITERIA, default=DEFAULT_CRITERION,
                   help="what --verify and --refine rank measured plans by: kl (the KL divergence of the plan's "
                        "next-token distribution from the unpruned model's) or loss (next-token cross-entropy on "
                        f"the windows' tokens); default {DEFAULT_CRITERION}. --selector sleb ranks by loss")
    p.add_argument("--screen", type=verify_count, default="auto", metavar="W",
                   help="with --verify: measure every candidate on W held-back windows first and only the best "
                        f"{CONFIRM} on all of them (refinement screens its growths and put-backs too); 0: off. "
                        f"Default auto: a quarter of the held-back windows")
    p.add_argument("--held-back", type=fraction, default=0.25, metavar="F",
                   help="share of the calibration windows (the last ones, at least one) held back: plans are "
                        "measured and heal maps checked on them, scores and maps fitted on the others (default "
                        "0.25)")
    p.add_argument("--no-portfolio", action="store_true",
                   help="with --verify: measure only the selector's own K best plans")


def _add_heal_options(p) -> None:
    """How the cuts are healed."""
    p.add_argument("--heal", choices=METHODS, default="none",
                   help="after the cut: none (default); scale: one factor per channel on the MLP output of the "
                        "block before each removed run; linear: a full map there (least squares on the calibration "
                        "tokens, folded into that block's weights: the checkpoint stays a plain one)")
    p.add_argument("--heal-fit", choices=FITS, default="sequential",
                   help="sequential (default): each cut fitted on the model with the earlier cuts made and healed; "
                        "dense: every cut on the unpruned model's states")
    p.add_argument("--heal-ridge", type=non_negative_float, default=1e-4, metavar="R",
                   help="ridge of the heal's least squares towards the identity (the unhealed cut), relative to the "
                        "mean squared MLP output (default 1e-4)")
    p.add_argument("--heal-objective", choices=OBJECTIVES, default="auto",
                   help="relative: each token's squared error divided by the squared norm of its target state; mse: "
                        "squared errors summed over tokens; auto (default): relative for linear, mse for scale")
    p.add_argument("--heal-tune", type=verify_count, default="auto", metavar="STEPS",
                   help="with --heal: tune the maps by STEPS optimiser steps against the unpruned model's next-token "
                        "distribution (KL) on the calibration windows, from the closed form; the tuned maps are kept "
                        "only if they beat it on the held-back windows; still folded into the same weights. 0: off; "
                        f"default auto: {DEFAULT_TUNE_STEPS} steps for --heal linear, none for scale or with "
                        "--offload. A number needs the model in memory or --device-map")
    p.add_argument("--heal-tune-lr", type=positive_float, default=DEFAULT_LR, metavar="LR",
                   help=f"Adam's step size for --heal-tune (default {DEFAULT_LR:g})")
    p.add_argument("--heal-refit", type=int, default=0, metavar="K",
                   help="with --heal: also fit a map on the MLP output of each of the next K kept blocks after every "
                        "removed run, on the pruned and healed model, against the unpruned model's state after that "
                        "block (folded the same way; sequential fit only; default 0)")


def _options(args) -> tuple[str, str, PruneOptions]:
    """MODEL, the calibration source and the options: from the command line or from a report."""
    if args.from_report is None:
        if args.calib is None:
            raise ValueError("--calib is required (or --from-report REPORT.json)")
        if args.num_remove is None and args.ratio is None:
            raise ValueError("give --num-remove N or --ratio F (how many blocks to remove)")
        options = PruneOptions.from_flat(
            num_remove=args.num_remove, ratio=args.ratio, selector=args.selector, estimator=args.estimator,
            verify=args.verify, portfolio=not args.no_portfolio, refine=args.refine, criterion=args.criterion,
            screen=args.screen, held_back=args.held_back,
            heal=args.heal, heal_fit=args.heal_fit, heal_ridge=args.heal_ridge,
            heal_objective=args.heal_objective, heal_refit=args.heal_refit, heal_tune=args.heal_tune,
            heal_tune_lr=args.heal_tune_lr,
            max_ppl_ratio=args.max_ppl_ratio,
            reduction=args.reduction, max_run=args.max_run, bins=args.bins, binning=args.binning, k=args.k,
            max_samples=args.max_samples, skip_first=args.skip_first, seed=args.seed, n_samples=args.n_samples,
            seq_len=args.seq_len, out_dir=args.out, overwrite=args.overwrite, plots=not args.no_plots,
            format=args.format or "hf",
            **execution_settings(args))
        return args.model, args.calib, options
    run = ReportedRun.read(args.from_report)
    model = run.model if args.model == "-" else args.model
    execution = run.options.execution.replace(device=args.device) if args.device else run.options.execution
    output = run.options.output.replace(out_dir=args.out, overwrite=args.overwrite, plots=not args.no_plots,
                                        **({"format": args.format} if args.format else {}))
    options = dataclasses.replace(run.options, execution=execution, output=output)
    return model, args.calib or run.calibration, options


def run(args) -> int:
    quiet_libraries(args.quiet)
    model, calib, options = _options(args)
    tokenizer = None
    if args.tokenizer is not None:
        tokenizer = load_tokenizer(args.tokenizer, trust_remote_code=options.execution.trust_remote_code)
    dp = join_data_parallel(options.execution.device)
    device = str(dp.device) if dp is not None else str(resolve_device(options.execution.device))
    if options.execution.device_map is not None:
        device = None  # the map places every module itself
    options = dataclasses.replace(options, execution=options.execution.replace(device=device))
    result = prune(model, calib, options, tokenizer=tokenizer, data_parallel=dp, progress=not args.quiet)
    if dp is not None and not dp.is_main:
        return 0  # the main process prints and writes
    if args.from_report is not None:
        _check_reproduced(args.from_report, result)
    print_single_block(result.table)
    print_plan(result)
    return 0


def _check_reproduced(report_path, result) -> None:
    """Say when the re-run read other calibration tokens than the report's (the text file changed)."""
    recorded = ReportedRun.read(report_path).calibration_sha256
    got = result.report["settings"]["calibration"].get("sha256")
    if recorded and got != recorded:
        warnings.warn(f"the calibration tokens differ from those {report_path} records (sha256 {got[:12]} vs "
                      f"{recorded[:12]}): the text or the tokenizer changed, so the plan may differ", RuntimeWarning)


