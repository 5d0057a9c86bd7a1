"""How calibration windows are drawn from a text source, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from miprun.util.options import Options, check_int

__all__ = ["CalibrationOptions"]


@dataclass(frozen=True)
class CalibrationOptions(Options):
    """Calibration windows.

    Attributes
    ----------
    n_samples : int
        Windows drawn (default 128).
    seq_len : int or None
        Tokens per window; None: ``min(2048, max_position_embeddings)``.
    seed : int
        Seeds which windows are drawn.
    held_back : float
        Share of the windows (the last ones, at least one) held back: plans are measured on
        them (verify, refine, SLEB, the plan check) and a heal's maps checked on them, while
        scores and heal maps are fitted on the others (:mod:`miprun.calibration.split`).
    """

    n_samples: int = 128
    seq_len: int | None = None
    seed: int = 0
    held_back: float = 0.25

    def __post_init__(self) -> None:
        check_int("n_samples", self.n_samples, low=1)
        check_int("seq_len", self.seq_len, low=1, allow_none=True)
        check_int("seed", self.seed)
        if isinstance(self.held_back, bool) or not isinstance(self.held_back, (int, float)) \
                or not 0 < self.held_back <= 0.5:
            raise ValueError(f"held_back must be a share of the calibration windows in (0, 0.5], got "
                             f"{self.held_back!r}")
