"""What the subcommands print, and where they may write (through the guarded writer)."""

from __future__ import annotations

from pathlib import Path

from miprun.output.guard import check_output_file

__all__ = ["print_single_block", "table_path", "print_plan"]


def print_single_block(table) -> None:
    single = table.single_block()
    print(f"single-block scores ({table.estimator}):")
    print("  " + "  ".join(f"{i}:{v:.4f}" for i, v in enumerate(single)))


def _residuals(entry: dict, without: str) -> str:
    """A heal map's relative residual on the fitted (and held-out) tokens, next to the one without the map."""
    fit, held = entry["fit"], entry["held_out"]
    text = f"relative residual {_num(fit['relative_residual'])} ({without} {_num(fit['unhealed_relative_residual'])})"
    if held.get("tokens"):
        text += (f", held out {_num(held['relative_residual'])} "
                 f"({without} {_num(held['unhealed_relative_residual'])})")
    return text


def print_plan(result) -> None:
    plan = result.plan
    print(f"removed blocks {plan.removed} of {plan.num_blocks} (selector {plan.selector}, estimator "
          f"{result.table.estimator}, {plan.evaluations} run scores read)")
    verify, measure = result.report.get("verify"), result.report.get("measure") or {}
    cost = f"{measure.get('measured', 0)} plans measured in {measure.get('sweeps', 0)} sweep(s)"
    if verify:
        screened = sum("screened" in c for c in verify["candidates"])
        line = (f"verify: {len(verify['candidates'])} candidate plans"
                + (f" ({screened} screened on {measure.get('screen_windows')} windows)" if screened else "")
                + f" measured by {verify['criterion']} on held-back windows, kept the one from "
                  f"{', '.join(verify['chosen_sources'])}")
        refined = verify.get("refine")
        if refined:
            moves = sum(r["moved"] for r in refined["rounds"])
            line += f"; refine: {moves} swap(s) kept in {len(refined['rounds'])} round(s)"
        print(f"{line} ({cost})")
    elif result.report.get("sleb"):
        print(f"sleb: {len(result.report['sleb']['steps'])} steps by measured loss ({cost})")
    heal = result.report.get("heal")
    if heal:
        for cut in heal["cuts"]:
            first, last = cut["removed"]
            run = f"blocks {first}-{last}" if last > first else f"block {first}"
            if cut["method"] is None:
                print(f"heal: {run} left unhealed: {cut['reason']}")
                continue
            line = f"heal: {run} {cut['method']} map after block {cut['after_block']}: {_residuals(cut, 'unhealed')}"
            if cut["reason"]:
                line += f"; {cut['reason']}"
            print(line)
        tune = heal.get("tune")
        if tune and tune.get("steps"):
            print(f"heal: maps tuned {tune['steps']} steps: held-back KL {tune['closed_form_held_out_kl']:.4g} (closed "
                  f"form) -> {tune['held_out_kl']:.4g}" + (f" at step {tune['best_step']}, kept" if tune["kept"] else
                                                          f"; {tune['reason']}"))
        elif tune:
            print(f"heal: maps not tuned: {tune['reason']}")
        for refit in heal.get("refits", []):
            if refit["method"] is None:
                print(f"heal: block {refit['block']} not refitted: {refit['reason']}")
                continue
            print(f"heal: block {refit['block']} refitted ({refit['method']}): {_residuals(refit, 'before')}")
    check = result.report.get("plan_check")
    if check:
        print(f"plan check: perplexity {check['pruned_perplexity']:.4g} pruned vs {check['dense_perplexity']:.4g} "
              f"unpruned on the {check['windows']} held-back calibration windows ({check['ratio']:.3g} x; refused "
              f"past {check['max_ratio']:g} x)")
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
    if result.out_dir is not None:
        print(f"pruned model written to {result.out_dir} (report: {Path(result.out_dir) / 'report.json'})")


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def table_path(out, overwrite: bool, *, model, calibration) -> Path | None:
    """The checked path of a JSON result (None: print it), never over the model or the calibration."""
    if out is None:
        return None
    return check_output_file(out, overwrite=overwrite, protect=(model, calibration))
