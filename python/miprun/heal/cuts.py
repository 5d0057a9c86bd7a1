"""The cuts a plan leaves, and for each whether and how it can be healed exactly."""

from __future__ import annotations

from dataclasses import dataclass, field

from miprun.models.families import Family
from miprun.selection.plan import runs_of

__all__ = ["Cut", "plan_cuts"]


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

    def to_dict(self) -> dict:
        return {"removed": [self.start, self.stop - 1], "after_block": self.block, "method": self.method,
                "healed": self.method is not None, "reason": self.reason, "fit": self.fit,
                "held_out": self.held_out}


def plan_cuts(removed, family: Family, config, method: str) -> list[Cut]:
    """Every removed run, with the method each gets (``method``, ``scale`` where only a scale folds, or none)."""
    site = family.heal
    not_exact = site.exact(config) if site is not None and site.exact is not None else None
    cuts = []
    for start, length in runs_of(removed):
        cut = Cut(start, start + length, start - 1 if start > 0 else None, method)
        if cut.block is None:
            cut.method, cut.reason = None, "the run starts at block 0: no kept block before it to fold a map into"
        elif site is None:
            cut.method, cut.reason = None, f"no exact fold is known for {family.name} blocks"
        elif not_exact is not None:
            cut.method, cut.reason = None, f"no exact fold: {not_exact}"
        elif method == "linear" and not site.full_map:
            cut.method = "scale"
            cut.reason = (f"{family.name} applies a norm after the MLP: only a per-channel scale folds exactly "
                          f"(into that norm's weight)")
        cuts.append(cut)
    return cuts
