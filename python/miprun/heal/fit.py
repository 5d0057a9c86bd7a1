"""Fit and fold one map per cut, layer by layer over the calibration windows.

One pass over the blocks, on the compute device: the unpruned model's states ``h`` give
each cut's target ``h_{s+L}``; with ``fit="sequential"`` a second stream ``g`` runs the
pruned model as it is being healed (removed blocks skipped, each map folded as soon as it
is solved), so a cut's map also absorbs what the cuts before it left. Until the first
removed block the two streams are one. The pass stops at the last cut's target block, and
holds at most one cut's MLP output at a time (cuts do not overlap). Hidden states never
leave the device; only the float64 sums of :class:`~miprun.heal.stats.CutStats` are kept
(and all-reduced across data-parallel processes).
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from miprun.heal.cuts import Cut, plan_cuts
from miprun.heal.fold import fold_map
from miprun.heal.options import HealOptions
from miprun.heal.stats import CutStats, relative_residual, solve
from miprun.hidden.capture import capture_block_args, run_block
from miprun.models.blocks import find_blocks, text_config
from miprun.models.families import family_of
from miprun.util.progress import progress_bar

__all__ = ["heal_cuts", "Healing"]


@dataclass
class Healing:
    """What :func:`heal_cuts` did: the report's ``heal`` section and the maps, by the block they fold into."""

    report: dict
    maps: dict[int, torch.Tensor] = field(default_factory=dict)


def heal_cuts(model: nn.Module, removed, fit_ids: torch.Tensor, held_ids: torch.Tensor | None = None, *,
              options: HealOptions, reducer=None, batch_size: int = 8, device=None,
              progress: bool = False) -> Healing:
    """Fit a map for every cut ``removed`` leaves and fold it into ``model`` (blocks not yet removed).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The unpruned model, in memory; the maps are folded into its kept blocks in place.
    removed : sequence of int
        The blocks the plan removes (they are removed afterwards, by surgery).
    fit_ids, held_ids : LongTensor (n, seq_len)
        Windows the maps are fitted on, and windows they are only checked on (may be None).
    options : HealOptions
    reducer : Reducer, optional
        Sums the statistics over data-parallel processes (each holding its share of windows).

    Returns
    -------
    Healing
        ``report``: the options, every cut (:meth:`Cut.to_dict`), blocks run, seconds;
        ``maps``: each map (float64; ``(d, d)``, or ``(d,)`` channel factors) by its block.
    """
    t0 = time.perf_counter()
    config = text_config(model.config)
    family = family_of(config)
    cuts = plan_cuts(removed, family, config, options.heal)
    active = [c for c in cuts if c.method is not None]
    out = {"method": options.heal, "fit": options.heal_fit, "ridge": options.heal_ridge, "blocks_run": 0}
    maps: dict[int, torch.Tensor] = {}
    if active:
        blocks, _ = find_blocks(model)
        ids = fit_ids if held_ids is None or held_ids.numel() == 0 else torch.cat([fit_ids, held_ids])
        dev = torch.device(device) if device is not None else model.get_input_embeddings().weight.device
        out["blocks_run"] = _pass(model, blocks, family.heal, ids, int(fit_ids.shape[0]), set(removed), active,
                                  options, reducer, batch_size, dev, progress, maps)
    out["cuts"] = [c.to_dict() for c in cuts]
    out["unhealed"] = [c.to_dict()["removed"] for c in cuts if c.method is None]
    out["seconds"] = time.perf_counter() - t0
    return Healing(out, maps)


def _pass(model, blocks, site, ids, n_fit, removed, active: list[Cut], options, reducer, batch_size, dev,
          progress, maps: dict) -> int:
    by_block = {c.block: c for c in active}
    by_stop = {c.stop: c for c in active}
    last = max(c.stop for c in active)
    sequential = options.heal_fit == "sequential"
    ran = 0
    was_training = model.training
    model.eval()
    bar = progress_bar(last, progress, desc="heal")
    try:
        with torch.inference_mode():
            h, calls = capture_block_args(model, blocks, ids, batch_size, dev)
        g = h  # the pruned, healed stream; the same tensor until the first removed block
        pending = None  # (cut, block output, MLP output) of the cut being fitted
        for i in range(last):
            here = site if i in by_block else None
            if g is h and (i not in removed or not sequential):
                h, m = _run(blocks[i], h, calls[i], here)
                g = h
                ran += 1
            else:
                h, _ = _run(blocks[i], h, calls[i], None)
                m = None
                if i not in removed:
                    g, m = _run(blocks[i], g, calls[i], here)
                ran += 1 + (i not in removed)
            if m is not None:
                pending = (by_block[i], g, m)
            if i + 1 in by_stop:
                done, y_block, m = pending
                T = _fit(done, y_block, m, h, n_fit, options, reducer, batch_size)
                fold_map(blocks[done.block], site, T)
                maps[done.block] = T
                if sequential:
                    g = _healed(y_block, m, T, batch_size)
                pending = None
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    return ran


def _run(block, h, calls, site) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The block over all windows, and with ``site`` the MLP output ``m`` there (else None)."""
    if site is None:
        with torch.inference_mode():
            return run_block(block, h, calls), None
    parts: list[torch.Tensor] = []

    def grab(module, args, output):
        parts.append(output[0] if isinstance(output, tuple) else output)

    handle = operator.attrgetter(site.output)(block).register_forward_hook(grab)
    try:
        with torch.inference_mode():
            out = run_block(block, h, calls)
    finally:
        handle.remove()
    return out, torch.cat(parts).reshape(out.shape)


def _chunks(n: int, size: int):
    for lo in range(0, n, size):
        yield slice(lo, min(lo + size, n))


def _fit(cut: Cut, y_block, m, target, n_fit, options: HealOptions, reducer, batch_size) -> torch.Tensor:
    """Sum the cut's statistics (fit and held-out windows apart), reduce, solve; record the residuals."""
    d = m.shape[-1]
    full = cut.method == "linear"
    fit, held = CutStats(d, full, m.device), CutStats(d, full, m.device)
    n = m.shape[0]
    with torch.inference_mode():
        for rows in _chunks(n, batch_size):  # float64 copies of a batch at a time
            mm = m[rows].double()
            r = target[rows].double() - (y_block[rows].double() - mm)  # r = y - a, a = block output - m
            lo, hi = rows.start, rows.stop
            if lo < n_fit:
                k = min(hi, n_fit) - lo
                fit.add(mm[:k], r[:k])
            if hi > n_fit:
                k = max(n_fit, lo) - lo
                held.add(mm[k:], r[k:])
    fit.reduce(reducer)
    held.reduce(reducer)
    T = solve(fit, options.heal_ridge)
    for name, stats in (("fit", fit), ("held_out", held)):
        setattr(cut, name, {"tokens": stats.tokens, "relative_residual": relative_residual(stats, T),
                            "unhealed_relative_residual": relative_residual(stats, None)})
    return T


def _healed(y_block, m, T, batch_size) -> torch.Tensor:
    """Block output with the map applied: ``a + m T`` (what the folded block computes)."""
    out = torch.empty_like(y_block)
    with torch.inference_mode():
        for rows in _chunks(m.shape[0], batch_size):
            mm = m[rows].double()
            mapped = mm * T if T.ndim == 1 else mm @ T
            out[rows] = (y_block[rows].double() - mm + mapped).to(out.dtype)
    return out
