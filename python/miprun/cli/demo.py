"""``miprun demo``: prune a small random model with planted redundant blocks (no download)."""

from __future__ import annotations

from miprun.cli.common import quiet_libraries
from miprun.pipeline.demo import run_demo

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("demo", help="prune a small random model with planted redundant blocks (no download)",
                       description="Build a small Llama with near-identity blocks planted, prune it, reload it, "
                                   "generate, and show that the planted blocks were found.")
    p.add_argument("--out", default=None, metavar="DIR", help="where to save the pruned model (default: a temp folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo output at --out")
    p.add_argument("--seed", type=int, default=0, help="seeds the model, the text and the estimator")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    quiet_libraries(args.quiet)
    result = run_demo(out_dir=args.out, overwrite=args.overwrite, seed=args.seed, progress=not args.quiet)
    return 0 if result.found_planted else 1
