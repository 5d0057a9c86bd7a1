"""Fit one map per cut, layer by layer over the calibration windows, and fold it.

One sweep over the blocks (:class:`~miprun.hidden.runner.Sweep`, the loop every stage uses),
on the compute device: the unpruned model's states ``h`` give each cut's target
``h_{s+L}``; with ``fit="sequential"`` a second stream ``g`` runs the pruned model as it is
being healed (removed blocks skipped, each map applied as soon as it is solved), so a cut's
map also absorbs what the cuts before it left; with ``refit=K`` the next ``K`` kept blocks
after each cut get maps of their own the same way (refits, see :mod:`miprun.heal.cuts`).
Until the first removed block the two streams are one. The sweep stops at the last cut's
target block, and holds at most one cut's MLP output at a time (cuts do not overlap). Hidden
states never leave the device; only the float64 sums of :class:`~miprun.heal.stats.CutStats`
are kept (and all-reduced across data-parallel processes).

Any block source serves (in memory, streamed, device map): the fit only reads the blocks.
The maps wait on the host (:class:`Healing`): a model in memory gets them folded into its
weights (:meth:`Healing.fold`), a checkpoint rewritten from its shards gets them folded as
the tensors are written (:meth:`Healing.fold_tensor`), and the measurer applies them to
measure the healed plan (:meth:`Healing.candidate`) before either happens.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from miprun.heal.cuts import Cut, plan_cuts, plan_refits
from miprun.heal.fold import fold_map, fold_tensor
from miprun.heal.options import HealOptions
from miprun.heal.stats import CutStats, relative_residual, solve
from miprun.hidden.runner import Sweep, as_source
from miprun.measure.candidates import Candidate
from miprun.measure.sweep import mapped_output
from miprun.models.blocks import find_blocks, text_config
from miprun.models.families import HealSite, family_of

__all__ = ["heal_cuts", "Healing"]


@dataclass
class Healing:
    """What :func:`heal_cuts` fitted.

    Attributes
    ----------
    report : dict
        The report's ``heal`` section.
    maps : dict
        Each map (float64, on the CPU; ``(d, d)``, or ``(d,)`` channel factors) by the block
        it folds into.
    site : HealSite or None
        Where the family's maps fold (None: nothing healed).
    originals : dict
        After :meth:`fold`: block -> the weight (and bias) as they were, for :meth:`undo`.
    """

    report: dict
    maps: dict[int, torch.Tensor] = field(default_factory=dict)
    site: HealSite | None = None
    originals: dict[int, tuple] = field(default_factory=dict)

    def candidate(self, removed, name: str = "heal") -> Candidate:
        """The healed plan, for the measurer: ``removed`` bypassed and every map applied."""
        return Candidate(tuple(removed), maps=dict(self.maps) or None, heal=name if self.maps else "")

    def fold(self, blocks) -> None:
        """Fold every map into the weights of a model in memory (its block list, or the model), keeping the old ones."""
        blocks = blocks if isinstance(blocks, nn.ModuleList) else find_blocks(blocks)[0]
        for block, T in self.maps.items():
            if block not in self.originals:
                self.originals[block] = _fold_params(blocks[block], self.site)
            fold_map(blocks[block], self.site, T)

    def undo(self, blocks) -> None:
        """Put back the weights :meth:`fold` replaced (a model in memory), e.g. when the plan is refused."""
        blocks = blocks if isinstance(blocks, nn.ModuleList) else find_blocks(blocks)[0]
        with torch.no_grad():
            for block, (weight, bias) in self.originals.items():
                operator.attrgetter(self.site.weight)(blocks[block]).copy_(weight)
                if bias is not None:
                    operator.attrgetter(self.site.bias)(blocks[block]).copy_(bias)
        self.originals.clear()

    def fold_tensor(self, block: int, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        """The tensor a checkpoint stores at ``<block prefix><block>.<name>`` with the block's map folded in
        (float64), or None when no map touches it: what a writer puts in place of the stored tensor."""
        T = self.maps.get(block)
        if T is None or self.site is None:
            return None
        role = "weight" if name == self.site.weight else "bias" if name == self.site.bias else None
        return None if role is None else fold_tensor(self.site, role, tensor, T)


def heal_cuts(source, removed, fit_ids: torch.Tensor, held_ids: torch.Tensor | None = None, *,
              options: HealOptions, reducer=None, batch_size: int = 8, progress: bool = False,
              fold: bool = True) -> Healing:
    """Fit a map for every cut ``removed`` leaves (blocks not yet removed), and fold it into a model in memory.

    Parameters
    ----------
    source : transformers.PreTrainedModel or BlockSource
        The unpruned model: in memory, or a block source
        (:func:`miprun.hidden.sources.open_source`: streamed, device map).
    removed : sequence of int
        The blocks the plan removes (they are removed afterwards, by surgery).
    fit_ids, held_ids : LongTensor (n, seq_len)
        Windows the maps are fitted on, and windows they are only checked on (may be None).
    options : HealOptions
    reducer : Reducer, optional
        Sums the statistics over data-parallel processes (each holding its share of windows).
    fold : bool
        Fold the maps into the weights of a source that holds the model in memory (the
        default, and what the public API does); False leaves every weight as it is, for the
        caller to fold after it has measured the healed plan.

    Returns
    -------
    Healing
    """
    t0 = time.perf_counter()
    source = as_source(source)
    config = text_config(source.config)
    family = family_of(config)
    cuts = plan_cuts(removed, family, config, options.heal)
    refits = plan_refits(cuts, removed, source.num_blocks, family, config, options.heal, options.heal_refit)
    active = [c for c in cuts + refits if c.method is not None]
    out = {"method": options.heal, "fit": options.heal_fit, "objective": options.objective,
           "ridge": options.heal_ridge, "refit": options.heal_refit, "blocks_run": 0}
    healing = Healing(out, site=family.heal)
    if active:
        ids = fit_ids if held_ids is None or held_ids.numel() == 0 else torch.cat([fit_ids, held_ids])
        out["blocks_run"] = _Pass(source, family.heal, set(removed), active, options, reducer, batch_size,
                                  healing).run(ids, int(fit_ids.shape[0]), progress)
    out["cuts"] = [c.to_dict() for c in cuts]
    out["refits"] = [r.to_dict() for r in refits]
    out["unhealed"] = [c.to_dict()["removed"] for c in cuts if c.method is None]
    out["seconds"] = time.perf_counter() - t0
    if fold and source.holds_model:
        healing.fold(source.blocks)
    return healing


class _Pass:
    """The one sweep over the blocks (module docstring), applying each map to the healed stream as it is solved."""

    def __init__(self, source, site, removed: set, active: list[Cut], options: HealOptions, reducer, batch_size,
                 healing: Healing):
        self.source, self.site, self.removed, self.options = source, site, removed, options
        self.reducer, self.batch_size, self.healing = reducer, batch_size, healing
        self.by_block = {c.block: c for c in active}
        self.by_stop = {c.stop: c for c in active}
        self.last = max(c.stop for c in active)

    def run(self, ids: torch.Tensor, n_fit: int, progress: bool) -> int:
        sequential = self.options.heal_fit == "sequential"
        ran = 0
        with Sweep(self.source, ids, batch_size=self.batch_size, progress=progress, desc="heal") as sweep:
            h = g = sweep.h0  # g: the pruned, healed stream; the same tensor until the first removed block
            pending = None  # (cut, block output, MLP output) of the cut being fitted
            for turn in sweep.blocks(self.last):
                i = turn.index
                here = self.site.output if i in self.by_block else None
                if g is h and (i not in self.removed or not sequential):
                    h, m = _run(turn, h, here)
                    g = h
                    ran += 1
                else:
                    h, _ = _run(turn, h, None)
                    m = None
                    if i not in self.removed:
                        g, m = _run(turn, g, here)
                    ran += 1 + (i not in self.removed)
                if m is not None:
                    pending = (self.by_block[i], g, m)
                if i + 1 in self.by_stop:
                    g = self._solve(pending, h, n_fit, sequential, g)
                    pending = None
        return ran

    def _solve(self, pending, target, n_fit: int, sequential: bool, g):
        """Fit the pending cut against ``target``; keep its map unless rejected; the healed stream after it."""
        done, y_block, m = pending
        T = _fit(done, y_block, m, target, n_fit, self.options, self.reducer, self.batch_size)
        rejected = _rejected(done, T)
        if rejected:  # the block's output stays as it is: g is already y_block
            done.reason, done.method = rejected, None
            return g
        self.healing.maps[done.block] = T.cpu()
        return mapped_output(y_block, m, T, self.batch_size) if sequential else g


def _run(turn, h, site_output):
    """The block over all windows, and with ``site_output`` the MLP output ``m`` there (else None)."""
    if site_output is None:
        return turn.run(h), None
    return turn.run(h, capture=site_output)


def _fold_params(block: nn.Module, site) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Copies of the weight (and bias) a map folds into, taken while a streamed block is loaded."""
    weight = operator.attrgetter(site.weight)(block).detach().clone()
    bias = operator.attrgetter(site.bias)(block) if site.bias is not None else None
    return weight, (None if bias is None else bias.detach().clone())


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
