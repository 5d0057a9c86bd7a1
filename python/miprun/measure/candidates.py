"""What a sweep measures: a set of blocks removed, with optional heal maps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["Candidate", "dense", "as_candidates"]


@dataclass(frozen=True)
class Candidate:
    """A pruned model to measure: the blocks it removes, and the heal maps it applies (if any).

    Attributes
    ----------
    removed : tuple of int
        Sorted indices of the bypassed blocks (``()``: the unpruned model).
    maps : mapping of int to Tensor, optional
        Heal maps by kept block ``i``: the block's MLP output ``m`` becomes ``m T``
        (``T`` float64, ``(d, d)`` or ``(d,)`` channel factors), as a fold into its weights
        would make it (:mod:`miprun.heal`).
    heal : str
        Names the maps (candidates are equal when their blocks and their ``heal`` are): two
        candidates with different maps need different names.
    """

    removed: tuple[int, ...]
    maps: Mapping[int, torch.Tensor] | None = field(default=None, compare=False, hash=False)
    heal: str = ""

    def __post_init__(self) -> None:
        removed = tuple(sorted({int(b) for b in self.removed}))
        object.__setattr__(self, "removed", removed)
        if bool(self.maps) != bool(self.heal):
            raise ValueError("a candidate with heal maps needs a heal name, and a heal name needs maps")
        if self.maps and set(self.maps) & set(removed):
            raise ValueError(f"heal maps on removed blocks {sorted(set(self.maps) & set(removed))}: a map belongs to "
                             f"a kept block")

    def step(self, i: int) -> tuple | None:
        """What this candidate does at block ``i``: ``("x",)`` bypassed, ``("m", heal)`` mapped, None run as is."""
        if i in self.removed:
            return ("x",)
        if self.maps and i in self.maps:
            return ("m", self.heal)
        return None


def dense() -> Candidate:
    """The unpruned model."""
    return Candidate(())


def as_candidates(plans: Iterable) -> list[Candidate]:
    """Candidates from plans given as block sets or :class:`Candidate`, in order, repeats kept."""
    return [p if isinstance(p, Candidate) else Candidate(tuple(p)) for p in plans]

