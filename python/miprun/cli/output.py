"""What the subcommands print, and where they may write (through the guarded writer)."""

from __future__ import annotations

from pathlib import Path

from miprun.output.guard import check_output_file

__all__ = ["print_single_block", "table_path", "print_plan"]


def print_single_block(table) -> None:
    single = table.single_block()
    print(f"single-block scores ({table.estimator}):")
    print("  " + "  ".join(f"{i}:{v:.4f}" for i, v in enumerate(single)))


def print_plan(result) -> None:
    plan = result.plan
    print(f"removed blocks {plan.removed} of {plan.num_blocks} (selector {plan.selector}, estimator "
          f"{result.table.estimator}, {plan.evaluations} run scores read)")
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
    if result.out_dir is not None:
        print(f"pruned model written to {result.out_dir} (report: {Path(result.out_dir) / 'report.json'})")


def table_path(out, overwrite: bool, *, model, calibration) -> Path | None:
    """The checked path of a JSON result (None: print it), never over the model or the calibration."""
    if out is None:
        return None
    return check_output_file(out, overwrite=overwrite, protect=(model, calibration))
