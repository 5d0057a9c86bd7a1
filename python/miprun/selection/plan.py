"""A pruning plan: which blocks to remove, and how that choice was made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def runs_of(blocks) -> list[tuple[int, int]]:
    """Split sorted block indices into maximal contiguous runs ``(start, length)``."""
    out: list[tuple[int, int]] = []
    for b in sorted(blocks):
        if out and out[-1][0] + out[-1][1] == b:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((b, 1))
    return out


@dataclass
class Plan:
    """The set of blocks to remove.

    Attributes
    ----------
    removed : list[int]
        0-based indices (in the input model) of the blocks to remove, sorted.
    num_blocks : int
        Number of blocks of the input model.
    selector : str
        The selector that chose them.
    evaluations : int
        Number of distinct run scores the selector read (MI evaluations).
    objective : float or None
        The selector's objective value for this plan, where it has one.
    trace : list[dict]
        Per-iteration record (Fast-Block-Select) or other diagnostics.
    """

    removed: list[int]
    num_blocks: int
    selector: str
    evaluations: int = 0
    objective: float | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    estimator: str | None = None

    def __post_init__(self) -> None:
        self.removed = sorted(int(b) for b in self.removed)
        if len(set(self.removed)) != len(self.removed):
            raise ValueError(f"plan removes a block twice: {self.removed}")
        bad = [b for b in self.removed if not 0 <= b < self.num_blocks]
        if bad:
            raise ValueError(f"plan removes blocks {bad} outside 0..{self.num_blocks - 1}")

    @property
    def kept(self) -> list[int]:
        gone = set(self.removed)
        return [b for b in range(self.num_blocks) if b not in gone]

    @property
    def runs(self) -> list[tuple[int, int]]:
        return runs_of(self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pruned_blocks": list(self.removed),
            "kept_blocks": self.kept,
            "runs": [list(r) for r in self.runs],
            "num_blocks": self.num_blocks,
            "selector": self.selector,
            "estimator": self.estimator,
            "evaluations": self.evaluations,
            "objective": self.objective,
            "trace": self.trace,
        }
