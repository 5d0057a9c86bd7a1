"""The calibration windows split once: scored, measured, and what a heal fits and checks on.

The last ``held_back`` share of the windows (at least one) is held back. Plans are measured
on them (verify, refine, SLEB, the plan check), so that the plan chosen is judged on tokens
the scores were not computed on; a heal fits its maps on the other windows and checks each
map on the held-back ones. Scores are computed on the other windows when plans are measured
to choose the plan, and on every window otherwise (the paper's path, ``--verify 0``, where
the held-back windows only serve the plan check). The report records the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["WindowSplit", "split_windows"]


@dataclass(frozen=True)
class WindowSplit:
    """Which calibration windows each step reads, as ``[start, stop)`` row ranges of the windows."""

    windows: int
    scored: tuple[int, int]
    measured: tuple[int, int]
    heal_fit: tuple[int, int]
    heal_check: tuple[int, int]

    def rows(self, ids: torch.Tensor, part: str) -> torch.Tensor:
        """The windows of ``part`` (``scored``, ``measured``, ``heal_fit``, ``heal_check``)."""
        start, stop = getattr(self, part)
        return ids[start:stop]

    def to_dict(self) -> dict:
        return {"windows": self.windows, "scored": list(self.scored), "measured": list(self.measured),
                "heal_fit": list(self.heal_fit), "heal_check": list(self.heal_check)}


def split_windows(n: int, held_back: float, *, score_held_back: bool) -> WindowSplit:
    """Split ``n`` windows: the last ``max(1, round(n * held_back))`` held back (none of ``n = 1``).

    ``score_held_back``: the scores also read the held-back windows (nothing is chosen by
    measuring plans on them).
    """
    if n < 1:
        raise ValueError(f"there are no calibration windows to split (n = {n})")
    held = min(n - 1, max(1, round(n * held_back)))
    if held == 0:  # one window: it is scored, measured and fitted on
        return WindowSplit(n, (0, n), (0, n), (0, n), (0, 0))
    rest = (0, n - held)
    return WindowSplit(n, (0, n) if score_held_back else rest, (n - held, n), rest, (n - held, n))
