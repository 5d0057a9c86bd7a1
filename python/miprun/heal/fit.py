"""Fit and fold one map per cut, layer by layer over the calibration windows.

One pass over the blocks, on the compute device: the unpruned model's states ``h`` give
each cut's target ``h_{s+L}``; with ``fit="sequential"`` a second stream ``g`` runs the
pruned model as it is being healed (removed blocks skipped, each map folded as soon as it
is solved), so a cut's map also absorbs what the cuts before it left; with ``refit=K`` the
next ``K`` kept blocks after each cut get maps of their own the same way (refits, see
:mod:`miprun.heal.cuts`). Until the first removed block the two streams are one. The pass
stops at the last cut's target block, and holds at most one cut's MLP output at a time
(cuts do not overlap). Hidden states never
leave the device; only the float64 sums of :class:`~miprun.heal.stats.CutStats` are kept
(and all-reduced across data-parallel processes).

The blocks come from a :class:`~miprun.hidden.sources.BlockSource`, as for scoring: a model
in memory gets its maps folded in place; a streamed one (weights read from the shards one
block at a time) keeps a copy of the folded weights of the blocks before the cuts, which
the checkpoint writer puts in place of the originals.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from miprun.heal.cuts import Cut, plan_cuts, plan_refits
from miprun.heal.fold import fold_map, folded
from miprun.heal.options import HealOptions
from miprun.heal.stats import CutStats, relative_residual, solve
from miprun.hidden.capture import capture_block_args, run_block
from miprun.hidden.in_memory import InMemorySource
from miprun.models.blocks import find_blocks, text_config
from miprun.models.families import family_of
from miprun.util.progress import progress_bar

__all__ = ["heal_cuts", "Healing"]


@dataclass
class Healing:
    """What :func:`heal_cuts` did.

    Attributes
    ----------
    report : dict
        The report's ``heal`` section.
    maps : dict
        Each map (float64, on the CPU; ``(d, d)``, or ``(d,)`` channel factors) by the block
        it folds into.
    replaced : dict
        Streamed source only: checkpoint key -> folded tensor (float32, on the CPU) to write
        instead.
    originals : dict
        Model in memory only: block -> the weight (and bias) as they were before the fold,
        for :meth:`undo`.
    """

    report: dict
    maps: dict[int, torch.Tensor] = field(default_factory=dict)
    replaced: dict[str, torch.Tensor] = field(default_factory=dict)
    originals: dict[int, tuple] = field(default_factory=dict)

    def undo(self, source) -> None:
        """Put back the weights the maps were folded into (a model in memory), e.g. when the plan is refused."""
        blocks = source.blocks if hasattr(source, "blocks") else find_blocks(source)[0]
        site = family_of(text_config(source.config)).heal
        with torch.no_grad():
            for block, (weight, bias) in self.originals.items():
                operator.attrgetter(site.weight)(blocks[block]).copy_(weight)
                if bias is not None:
                    operator.attrgetter(site.bias)(blocks[block]).copy_(bias)
        self.originals.clear()


def heal_cuts(source, removed, fit_ids: torch.Tensor, held_ids: torch.Tensor | None = None, *,
              options: HealOptions, reducer=None, batch_size: int = 8, progress: bool = False) -> Healing:
    """Fit a map for every cut ``removed`` leaves and fold it into the block before it (blocks not yet removed).

    Parameters
    ----------
    source : transformers.PreTrainedModel or BlockSource
        The unpruned model: in memory (the maps are folded into its kept blocks in place), or
        a block source (:func:`miprun.hidden.sources.open_source`; streamed weights give
        :attr:`Healing.replaced` instead).
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
    """
    t0 = time.perf_counter()
    if isinstance(source, nn.Module):
        source = InMemorySource(source)
    if source.kind not in ("in_memory", "streamed"):
        raise ValueError(f"healing folds its maps into a model in memory or a streamed checkpoint, not into "
                         f"weights placed by a device map ({source.kind})")
    config = text_config(source.config)
    family = family_of(config)
    cuts = plan_cuts(removed, family, config, options.heal)
    refits = plan_refits(cuts, removed, source.num_blocks, family, config, options.heal, options.heal_refit)
    active = [c for c in cuts + refits if c.method is not None]
    out = {"method": options.heal, "fit": options.heal_fit, "objective": options.objective,
           "ridge": options.heal_ridge, "refit": options.heal_refit, "blocks_run": 0}
    healing = Healing(out)
    if active:
        ids = fit_ids if held_ids is None or held_ids.numel() == 0 else torch.cat([fit_ids, held_ids])
        out["blocks_run"] = _Pass(source, family.heal, set(removed), active, options, reducer, batch_size,
                                  healing).run(ids, int(fit_ids.shape[0]), progress)
    out["cuts"] = [c.to_dict() for c in cuts]
    out["refits"] = [r.to_dict() for r in refits]
    out["unhealed"] = [c.to_dict()["removed"] for c in cuts if c.method is None]
    out["seconds"] = time.perf_counter() - t0
    return healing


class _Pass:
    """The one pass over the blocks (module docstring), folding each map as it is solved."""

    def __init__(self, source, site, removed: set, active: list[Cut], options: HealOptions, reducer, batch_size,
                 healing: Healing):
        self.source, self.site, self.removed, self.options = source, site, removed, options
        self.reducer, self.batch_size, self.healing = reducer, batch_size, healing
        self.by_block = {c.block: c for c in active}
        self.by_stop = {c.stop: c for c in active}
        self.last = max(c.stop for c in active)
        self.weights: dict[int, tuple] = {}  # streamed: the fold's weight and bias of each block before a cut

    def run(self, ids: torch.Tensor, n_fit: int, progress: bool) -> int:
        source, blocks = self.source, self.source.blocks
        sequential = self.options.heal_fit == "sequential"
        ran = 0
        bar = progress_bar(self.last, progress, desc="heal")
        try:
            source.enter_capture()
            try:
                with torch.inference_mode():
                    h, calls = capture_block_args(source.model, blocks, ids, self.batch_size, source.device,
                                                  input_device=source.input_device)
            finally:
                source.leave_capture()
            g = h  # the pruned, healed stream; the same tensor until the first removed block
            pending = None  # (cut, block output, MLP output) of the cut being fitted
            for i in range(self.last):
                here = self.site if i in self.by_block else None
                source.enter_block(i)
                try:
                    if g is h and (i not in self.removed or not sequential):
                        h, m = _run(blocks[i], h, calls[i], here)
                        g = h
                        ran += 1
                    else:
                        h, _ = _run(blocks[i], h, calls[i], None)
                        m = None
                        if i not in self.removed:
                            g, m = _run(blocks[i], g, calls[i], here)
                        ran += 1 + (i not in self.removed)
                    if m is not None and source.kind != "in_memory":
                        self.weights[i] = _fold_params(blocks[i], self.site)
                finally:
                    source.leave_block(i)
                calls[i] = []
                if m is not None:
                    pending = (self.by_block[i], g, m)
                if i + 1 in self.by_stop:
                    done, y_block, m = pending
                    T = _fit(done, y_block, m, h, n_fit, self.options, self.reducer, self.batch_size)
                    rejected = _rejected(done, T)
                    if rejected:  # the block's output stays as it is: g is already y_block
                        done.reason, done.method = rejected, None
                    else:
                        self._fold(done.block, T)
                        if sequential:
                            g = _healed(y_block, m, T, self.batch_size)
                    pending = None
                bar.update(1)
        finally:
            bar.close()
            source.close()
        return ran

    def _fold(self, block: int, T: torch.Tensor) -> None:
        self.healing.maps[block] = T.cpu()
        if self.source.kind == "in_memory":
            self.healing.originals[block] = _fold_params(self.source.blocks[block], self.site)
            fold_map(self.source.blocks[block], self.site, T)
            return
        weight, bias = self.weights.pop(block)
        new_weight, new_bias = folded(self.site, weight, bias, T)
        keys = self.source.block_keys[block]
        # float32 on the host until the shards are written (cast there to the stored dtype)
        self.healing.replaced[keys[self.site.weight]] = new_weight.float().cpu()
        if new_bias is not None:
            self.healing.replaced[keys[self.site.bias]] = new_bias.float().cpu()


def _fold_params(block: nn.Module, site) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Copies of the weight (and bias) a map folds into, taken while a streamed block is loaded."""
    weight = operator.attrgetter(site.weight)(block).detach().clone()
    bias = operator.attrgetter(site.bias)(block) if site.bias is not None else None
    return weight, (None if bias is None else bias.detach().clone())


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
            y = target[rows].double()
            r = y - (y_block[rows].double() - mm)  # r = y - a, a = block output - m
            w = 1.0 / (y * y).sum(-1).clamp_min(1e-30) if _objective(cut, options) == "relative" else None
            lo, hi = rows.start, rows.stop
            if lo < n_fit:
                k = min(hi, n_fit) - lo
                fit.add(mm[:k], r[:k], None if w is None else w[:k])
            if hi > n_fit:
                k = max(n_fit, lo) - lo
                held.add(mm[k:], r[k:], None if w is None else w[k:])
    fit.reduce(reducer)
    held.reduce(reducer)
    T = solve(fit, options.heal_ridge)
    for name, stats in (("fit", fit), ("held_out", held)):
        setattr(cut, name, {"tokens": stats.tokens, "relative_residual": relative_residual(stats, T),
                            "unhealed_relative_residual": relative_residual(stats, None)})
    return T


def _rejected(cut: Cut, T: torch.Tensor) -> str | None:
    """Why the map is not folded (not finite; no better than the unhealed cut on the held-out windows), or None."""
    if not bool(torch.isfinite(T).all()):
        return f"left unhealed: the fitted {cut.method} map is not finite (a singular fit; raise --heal-ridge)"
    got, unhealed = cut.held_out.get("relative_residual"), cut.held_out.get("unhealed_relative_residual")
    if got is not None and unhealed is not None and not got < unhealed:
        return (f"left unhealed: the fitted {cut.method} map did not lower the residual on the held-out windows "
                f"({got:.4g} vs {unhealed:.4g} unhealed)")
    return None


def _objective(cut: Cut, options: HealOptions) -> str:
    """The cut's objective: ``auto`` follows the method the cut got (a ``linear`` cut of Gemma gets a scale)."""
    if options.heal_objective != "auto":
        return options.heal_objective
    return "mse" if cut.method == "scale" else "relative"


def _healed(y_block, m, T, batch_size) -> torch.Tensor:
    """Block output with the map applied: ``a + m T`` (what the folded block computes)."""
    out = torch.empty_like(y_block)
    with torch.inference_mode():
        for rows in _chunks(m.shape[0], batch_size):
            mm = m[rows].double()
            mapped = mm * T if T.ndim == 1 else mm @ T
            out[rows] = (y_block[rows].double() - mm + mapped).to(out.dtype)
    return out
