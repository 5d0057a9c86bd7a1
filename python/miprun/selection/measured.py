"""The measured criterion of plans, cached and counted: what verify, refine and SLEB search over.

A :class:`Measured` wraps a :class:`~miprun.measure.Measurer` (a batch of plans per sweep,
loss and KL of each) or any ``loss(removed) -> float`` callable (one plan at a time), so
the searches never see a model. Every plan is measured once per set of windows, whichever
search asks first; the counts of the report come from here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

__all__ = ["Measured", "Loss"]

#: ``loss(removed) -> float``: a plan's measured loss, ``removed`` a sorted tuple of block indices.
Loss = Callable[[tuple[int, ...]], float]


class Measured:
    """Plans' criterion values (lower is better), each plan measured once per window set.

    Parameters
    ----------
    measure : Measurer or callable
        A :class:`miprun.measure.Measurer` (plans measured in batches; its ``criterion``
        value is used, both values are recorded), or ``loss(removed) -> float``.
    criterion : {"kl", "loss"}
        What a measurer's values are read as (a callable is its own criterion).

    Attributes
    ----------
    plans_measured : int
        Distinct (plan, window set) pairs measured.
    requests : int
        Batches asked of the measurer (each at most a few sweeps).
    seconds : float
    """

    def __init__(self, measure, *, criterion: str = "kl"):
        self._measurer = measure if hasattr(measure, "measure") else None
        if self._measurer is None and not callable(measure):
            raise ValueError(f"measure must be a miprun.measure.Measurer or a callable loss(removed) -> float, "
                             f"got {type(measure).__name__}")
        if criterion not in ("kl", "loss"):
            raise ValueError(f"criterion must be 'kl' or 'loss', got {criterion!r}")
        self._loss = measure
        self.criterion = criterion if self._measurer is not None else "loss"
        self.values: dict[tuple[tuple[int, ...], bool], float] = {}
        self.details: dict[tuple[tuple[int, ...], bool], dict] = {}
        self.plans_measured = self.requests = 0
        self.seconds = 0.0

    @property
    def can_screen(self) -> bool:
        """Whether a cheaper screening measurement (fewer windows) exists."""
        return self._measurer is not None and self._measurer.windows(True) < self._measurer.windows(False)

    def __call__(self, plans: Iterable[Sequence[int]], *, screen: bool = False) -> list[float]:
        """The criterion value of each plan (NaN counts as worst: +inf)."""
        keys = [tuple(sorted(int(b) for b in p)) for p in plans]
        screen = bool(screen and self.can_screen)
        todo = [k for k in dict.fromkeys(keys) if (k, screen) not in self.values]
        if todo:
            t = time.perf_counter()
            self.requests += 1
            if self._measurer is not None:
                for key, m in zip(todo, self._measurer.measure(todo, screen=screen)):
                    self._store(key, screen, m.value(self.criterion), {"loss": m.loss, "kl": m.kl})
            else:
                for key in todo:
                    value = float(self._loss(key))
                    self._store(key, screen, value, {"loss": value})
            self.seconds += time.perf_counter() - t
        return [self.values[(k, screen)] for k in keys]

    def one(self, plan: Sequence[int], *, screen: bool = False) -> float:
        return self([plan], screen=screen)[0]

    def _store(self, key, screen: bool, value: float, detail: dict) -> None:
        self.values[(key, screen)] = math.inf if math.isnan(value) else value
        self.details[(key, screen)] = detail
        self.plans_measured += 1

    def detail(self, plan: Sequence[int], *, screen: bool = False) -> dict:
        """What was measured of ``plan`` (``loss`` and, with a measurer, ``kl``), for the report."""
        return dict(self.details[(tuple(sorted(int(b) for b in plan)), bool(screen and self.can_screen))])

    def summary(self) -> dict:
        return {"criterion": self.criterion, "plans_measured": self.plans_measured, "requests": self.requests,
                "seconds": self.seconds}
