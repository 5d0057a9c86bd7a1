"""``miprun score``: the score table of every run of blocks, printed or written as JSON."""

from __future__ import annotations

from miprun.util.devices import resolve_device
from miprun.cli.common import (add_calibration_options, add_model_options, add_scoring_options,
                               execution_settings, join_data_parallel, quiet_libraries)
from miprun.cli.output import print_single_block, table_path
from miprun.models.loading import load_tokenizer
from miprun.scoring.score import score_blocks
from miprun.output.guard import write_output_json
from miprun.util.jsonio import dumps

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("score", help="score every run of blocks and write the score table",
                       description="Score runs of blocks by MI between the hidden states around them (one pass).")
    add_model_options(p)
    add_calibration_options(p)
    add_scoring_options(p)
    p.add_argument("--out", default=None, metavar="TABLE.json", help="write the table here (default: print it)")
    p.add_argument("--overwrite", action="store_true", help="replace a table miprun wrote earlier at --out")
    p.set_defaults(func=run)


def run(args) -> int:
    quiet_libraries(args.quiet)
    out = table_path(args.out, args.overwrite, model=args.model, calibration=args.calib)
    tokenizer = load_tokenizer(args.tokenizer, trust_remote_code=args.trust_remote_code) if args.tokenizer else None
    dp = join_data_parallel(args.device)
    execution = execution_settings(args)
    execution["device"] = str(dp.device) if dp is not None else str(resolve_device(args.device))
    if args.device_map is not None:
        execution["device"] = None  # the map places every module itself
    table = score_blocks(args.model, args.calib, tokenizer=tokenizer, data_parallel=dp, progress=not args.quiet,
                         estimator=args.estimator or "hist", reduction=args.reduction, max_run=args.max_run,
                         bins=args.bins, binning=args.binning, k=args.k, max_samples=args.max_samples,
                         skip_first=args.skip_first, seed=args.seed, n_samples=args.n_samples,
                         seq_len=args.seq_len, **execution)
    if dp is not None and not dp.is_main:
        return 0  # every process holds the same table; the main one reports it
    if out is None:
        print(dumps(table.to_dict()), end="")
        return 0
    write_output_json(out, table.to_dict(), kind="score", overwrite=args.overwrite,
                      protect=(args.model, args.calib))
    print_single_block(table)
    print(f"score table written to {out}")
    return 0
