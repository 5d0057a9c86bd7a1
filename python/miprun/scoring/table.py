"""The score table: one score per contiguous run of blocks.

``values[s, L - 1]`` is the raw score of the run ``(s, L)`` (blocks ``s..s+L-1``),
``MI(h_s, h_{s+L})`` for the MI estimators; entries with ``s + L > num_blocks`` are NaN.

A table may carry *companion* tables: other estimators' tables of the same states, scored
in the same pass (e.g. the ``cosine`` and ``angular`` tables that the ShortGPT and Gromov
baselines read, which ``verify`` adds to its candidates), keyed by estimator name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from miprun.mi.scale import DISTANCE_ESTIMATORS, MI_ESTIMATORS, information_coefficient, redundancy

__all__ = ["ScoreTable", "MI_ESTIMATORS", "DISTANCE_ESTIMATORS", "information_coefficient", "redundancy"]


@dataclass
class ScoreTable:
    """Scores of every run ``(s, L)`` with ``L <= max_run`` of a model's blocks.

    Attributes
    ----------
    values : ndarray, shape (num_blocks, max_run), float64
        Raw estimator values; ``values[s, L-1]`` scores the run of blocks ``s..s+L-1``.
    estimator : str
        The estimator that produced them (``hist``, ``ksg``, ``gaussian``, ``cosine``, ``angular``).
    settings : dict
        Everything needed to reproduce them (reduction, bins, seed, calibration, ...).
    companions : dict[str, ScoreTable]
        Tables of other estimators over the same hidden states, scored in the same pass
        (estimator name -> table, each with the same number of blocks and its own
        ``max_run``); empty unless asked for (see :func:`miprun.scoring.onepass.score_states`).
    """

    values: np.ndarray
    estimator: str
    settings: dict[str, Any] = field(default_factory=dict)
    companions: dict[str, "ScoreTable"] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2 or self.values.shape[1] < 1:
            raise ValueError(f"score table values must have shape (num_blocks, max_run), got {self.values.shape}")
        self.companions = dict(self.companions or {})
        for name, other in self.companions.items():
            if not isinstance(other, ScoreTable) or other.estimator != name or other.num_blocks != self.num_blocks:
                raise ValueError(f"companion table {name!r} must be a ScoreTable of estimator {name!r} over the same "
                                 f"{self.num_blocks} blocks")

    @property
    def num_blocks(self) -> int:
        return int(self.values.shape[0])

    @property
    def max_run(self) -> int:
        return int(self.values.shape[1])

    def score(self, start: int, length: int) -> float:
        """Raw score of the run of ``length`` blocks starting at ``start``."""
        if not (1 <= length <= self.max_run and 0 <= start and start + length <= self.num_blocks):
            raise IndexError(
                f"run (start={start}, length={length}) is outside this table "
                f"({self.num_blocks} blocks, runs up to length {self.max_run})"
            )
        return float(self.values[start, length - 1])

    def single_block(self) -> np.ndarray:
        """Raw scores of the single blocks, shape (num_blocks,)."""
        return self.values[:, 0].copy()

    def normalised(self) -> np.ndarray:
        """Scores oriented and scaled to ``[0, 1]`` (1: run is an identity), see :func:`redundancy`."""
        return redundancy(self.values, self.estimator)

    def to_dict(self) -> dict[str, Any]:
        vals = [[None if np.isnan(v) else float(v) for v in row] for row in self.values]
        out = {"estimator": self.estimator, "settings": dict(self.settings), "values": vals,
               "num_blocks": self.num_blocks, "max_run": self.max_run}
        if self.companions:  # only when present, so that a table without them reads as before
            out["companions"] = {name: t.to_dict() for name, t in self.companions.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScoreTable":
        vals = np.array([[np.nan if v is None else v for v in row] for row in d["values"]], dtype=np.float64)
        companions = {name: cls.from_dict(t) for name, t in (d.get("companions") or {}).items()}
        return cls(values=vals, estimator=d["estimator"], settings=dict(d.get("settings", {})),
                   companions=companions)
