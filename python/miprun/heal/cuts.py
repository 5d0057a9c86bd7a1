"""The cuts a plan leaves, and for each whether and how it can be healed exactly.

Each removed run is a *cut*: its map acts on the MLP output of the kept block before it.
With ``refit=K`` the first ``K`` kept blocks after each run are *refits*: their MLP outputs
get a map of their own, fitted on the healed, pruned model's states against the unpruned
model's states after that block (a refit is a cut that removes nothing). A block followed by
a removed run is that run's cut already, and is not refitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from miprun.models.families import Family
from miprun.selection.plan import runs_of

__all__ = ["Cut", "plan_cuts", "plan_refits"]


@dataclass
class Cut:
    """One removed run ``start .. stop - 1``, healed (or not) after the kept block ``block``.

    Attributes
    ----------
    start, stop : int
        The run removed: blocks ``start`` to ``stop - 1``.
    block : int or None
        The kept block before it, whose MLP output the map acts on (None: the run starts at 0).
    method : str or None
        ``linear`` or ``scale`` as fitted; None when the cut is left unhealed.
    reason : str or None
        Why the cut is unhealed (no exact fold, or a map that did not beat the unhealed cut
        on the held-out windows), or healed with less than asked.
    kind : str
        ``cut`` (a removed run) or ``refit`` (``start == stop == block + 1``: nothing removed,
        the kept block ``block`` refitted after the cut ``follows``).
    follows : tuple or None
        A refit's cut, ``(first, last)`` removed block.
    fit, held_out : dict
        Relative residuals ``||m T - r||^2 / ||r||^2`` of the map and of the unhealed cut
        (``T = I``) on the fitted tokens and on the held-out ones, each token weighted as the
        objective weights it (the ``relative`` objective: by ``1 / ||y_t||^2``), and their
        token counts.
    """

    start: int
    stop: int
    block: int | None
    method: str | None
    reason: str | None = None
    fit: dict = field(default_factory=dict)
    held_out: dict = field(default_factory=dict)
    kind: str = "cut"
    follows: tuple | None = None

    def to_dict(self) -> dict:
        where = {"removed": [self.start, self.stop - 1], "after_block": self.block} if self.kind == "cut" else \
            {"block": self.block, "after_cut": list(self.follows)}
        return {**where, "method": self.method, "healed": self.method is not None, "reason": self.reason,
                "fit": self.fit, "held_out": self.held_out}


def plan_cuts(removed, family: Family, config, method: str) -> list[Cut]:
    """Every removed run, with the method each gets (``method``, ``scale`` where only a scale folds, or none)."""
    cuts = []
    for start, length in runs_of(removed):
        cut = Cut(start, start + length, start - 1 if start > 0 else None, method)
        if cut.block is None:
            cut.method, cut.reason = None, "the run starts at block 0: no kept block before it to fold a map into"
        else:
            _fold_method(cut, family, config, method)
        cuts.append(cut)
    return cuts


def plan_refits(cuts: list[Cut], removed, num_blocks: int, family: Family, config, method: str,
                refit: int) -> list[Cut]:
    """The first ``refit`` kept blocks after each cut, other than blocks that are a cut's own (module docstring)."""
    gone = set(removed)
    taken = {c.block for c in cuts}
    out = []
    for cut in cuts:
        q, found = cut.stop, 0
        while q < num_blocks and found < refit and q not in gone:
            if q not in taken:  # a block before a removed run is that run's cut
                r = Cut(q + 1, q + 1, q, method, kind="refit", follows=(cut.start, cut.stop - 1))
                _fold_method(r, family, config, method)
                out.append(r)
                taken.add(q)
            found += 1
            q += 1
    return out


def _fold_method(cut: Cut, family: Family, config, method: str) -> None:
    """The method that folds exactly at the cut's block (``scale`` where only a scale does), or none with the reason."""
    site = family.heal
    not_exact = site.exact(config) if site is not None and site.exact is not None else None
    if site is None:
        cut.method, cut.reason = None, f"no exact fold is known for {family.name} blocks"
    elif not_exact is not None:
        cut.method, cut.reason = None, f"no exact fold: {not_exact}"
    elif method == "linear" and not site.full_map:
        cut.method = "scale"
        cut.reason = (f"{family.name} applies a norm after the MLP: only a per-channel scale folds exactly "
                      f"(into that norm's weight)")
