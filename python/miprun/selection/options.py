"""How many blocks go and how they are chosen: the selector and its settings, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from miprun.selection.select import SCALES, SELECTORS
from miprun.selection.verify import companion_runs
from miprun.util.options import Options, check_choice, check_int

__all__ = ["SelectionOptions", "BASELINE_ESTIMATORS", "SINGLE_BLOCK_SELECTORS", "AUTO_VERIFY", "AUTO_REFINE",
           "CRITERIA", "DEFAULT_CRITERION", "AUTO_SCREEN", "CONFIRM"]

#: Baseline selectors read a table of their own distance, not MI.
BASELINE_ESTIMATORS = {"shortgpt": "cosine", "gromov": "angular"}
#: Selectors that only read single-block scores: max_run 1 is all they need.
SINGLE_BLOCK_SELECTORS = ("greedy", "shortgpt")
#: The K of ``verify="auto"``: the selector's 2 best plans and the portfolio, measured (see the
#: README for the evidence behind it).
AUTO_VERIFY = 2
#: The rounds of ``refine="auto"`` where verify runs: measured swaps along the verified plan's
#: runs (see the README for the evidence behind it).
AUTO_REFINE = 3
#: What measured plans are ranked by: ``kl`` (divergence of the next-token distribution from the
#: unpruned model's) or ``loss`` (next-token cross-entropy on the windows' own tokens).
CRITERIA = ("kl", "loss")
#: The default criterion (see the README for the evidence behind it).
DEFAULT_CRITERION = "kl"
#: ``screen="auto"``: a quarter of the held-back windows (at least one) screen the candidates.
AUTO_SCREEN = 0.25
#: Candidates measured on every held-back window after screening.
CONFIRM = 3


@dataclass(frozen=True)
class SelectionOptions(Options):
    """The plan's settings.

    Attributes
    ----------
    num_remove, ratio
        How many blocks to remove: exactly one of a count ``1 <= num_remove < num_blocks``
        or a fraction of the depth in (0, 1), rounded.
    selector : str
        One of :data:`miprun.selection.select.SELECTORS`.
    scale, log_base, allow_touching, max_iterations, max_subsets
        As :func:`miprun.select`.
    verify : int or "auto"
        0: off. ``K >= 1``: measure the selector's K best plans (and, with ``portfolio``,
        the other cheap selectors' plans) on the held-back windows and keep the best; not
        with ``sleb``, which measures every step. As :func:`miprun.selection.verify.verify`.
        ``"auto"`` (the default): :data:`AUTO_VERIFY` where it can run (at least two
        calibration windows, a selector other than ``sleb``), else 0; :meth:`resolve` decides.
    portfolio : bool
        With ``verify``: add the plans of :data:`miprun.selection.select.PORTFOLIO`, and of
        :data:`~miprun.selection.select.BASELINE_PORTFOLIO` and
        :data:`~miprun.selection.select.GAUSSIAN_PORTFOLIO` from the companion tables the
        scoring pass adds (:meth:`companions`).
    refine : int or "auto"
        With ``verify``: rounds of measured one-block swaps along the verified plan's runs
        (:func:`miprun.selection.refine.refine`); 0: off. ``"auto"`` (the default):
        :data:`AUTO_REFINE` where verify runs, else 0. A count with ``verify=0`` is refused.
    criterion : str
        One of :data:`CRITERIA`: what verify and refine rank measured plans by (default
        :data:`DEFAULT_CRITERION`). SLEB always ranks by loss, as its paper does.
    screen : int or "auto"
        Held-back windows on which verify's candidates (and refine's growths and put-backs)
        are measured first; only the best :data:`CONFIRM` candidates are then measured on
        all of them. 0: off. ``"auto"``: :data:`AUTO_SCREEN` of the held-back windows.
    """

    num_remove: int | None = None
    ratio: float | None = None
    selector: str = "fast_block_select"
    scale: str = "raw"
    log_base: float = math.e
    allow_touching: bool = True
    max_iterations: int = 100
    max_subsets: int = 50_000_000
    verify: int | str = "auto"
    portfolio: bool = True
    refine: int | str = "auto"
    criterion: str = DEFAULT_CRITERION
    screen: int | str = "auto"

    def __post_init__(self) -> None:
        if (self.num_remove is None) == (self.ratio is None):
            raise ValueError("give exactly one of num_remove (--num-remove) and ratio (--ratio)")
        check_int("num_remove", self.num_remove, allow_none=True)
        if self.num_remove is not None and self.num_remove < 1:
            raise ValueError(f"num_remove={self.num_remove} removes no block; remove at least 1 (and fewer than "
                             f"the model has)")
        if self.ratio is not None and (isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float))
                                       or not 0 < self.ratio < 1):
            raise ValueError(f"ratio must be a fraction in (0, 1), got {self.ratio!r}")
        check_choice("selector", self.selector, SELECTORS)
        check_choice("scale", self.scale, SCALES)
        if isinstance(self.log_base, bool) or not isinstance(self.log_base, (int, float)) or not self.log_base > 1:
            raise ValueError(f"log_base must be a number > 1, got {self.log_base!r}")
        if not isinstance(self.allow_touching, bool):
            raise ValueError(f"allow_touching must be True or False, got {self.allow_touching!r}")
        check_int("max_iterations", self.max_iterations, low=1)
        check_int("max_subsets", self.max_subsets, low=1)
        if self.verify != "auto":
            check_int("verify", self.verify, low=0)
        if not isinstance(self.portfolio, bool):
            raise ValueError(f"portfolio must be True or False, got {self.portfolio!r}")
        if self.refine != "auto":
            check_int("refine", self.refine, low=0)
            if self.refine and (self.verify == 0 or self.selector == "sleb"):
                raise ValueError(f"refine={self.refine} improves the plan verify chose by measured swaps: it needs "
                                 f"verify (--verify K or auto, not 0) and a selector other than sleb")
        check_choice("criterion", self.criterion, CRITERIA)
        if self.screen != "auto":
            check_int("screen", self.screen, low=0)
        if self.verify != "auto" and self.verify and self.selector == "sleb":
            raise ValueError("selector 'sleb' measures the loss at every step already: verify applies to the other "
                             "selectors (drop --verify, or choose another selector)")

    def resolve(self, *, n_windows: int) -> "SelectionOptions":
        """These options with ``verify="auto"`` decided (:data:`AUTO_VERIFY` where verify can run, else 0), and
        ``refine="auto"`` (:data:`AUTO_REFINE` where verify runs, else 0)."""
        verify = self.verify
        if verify == "auto":
            verify = AUTO_VERIFY if n_windows >= 2 and self.selector != "sleb" else 0
        elif verify and n_windows < 2:
            raise ValueError(f"verify holds calibration windows back from scoring to measure plans on, so it needs at "
                             f"least 2 windows; got {n_windows} (raise --n-samples, or --verify 0)")
        refine = self._refine_for(verify)
        if refine and not verify:
            raise ValueError(f"refine={refine} needs verify, which is off here (verify='auto' turns it off with "
                             f"fewer than 2 calibration windows, or with selector sleb): drop --refine")
        if verify == self.verify and refine == self.refine:
            return self
        return self.replace(verify=verify, refine=refine)

    @property
    def measures_plans(self) -> bool:
        """Whether the plan is chosen by measuring plans (``sleb``, ``verify``), so scores skip the held-back windows."""
        self._check_resolved()
        return self.selector == "sleb" or self.verify > 0

    def screen_windows(self, measured: int) -> int:
        """Screening windows among ``measured`` held-back ones (0: no screening)."""
        if self.screen == "auto":
            return max(1, round(measured * AUTO_SCREEN)) if measured > 1 else 0
        return min(self.screen, measured)

    def count(self, num_blocks: int) -> int:
        """The number of blocks to remove from a model of ``num_blocks`` blocks."""
        if self.ratio is not None:
            n = int(round(self.ratio * num_blocks))
            if not 1 <= n < num_blocks:
                raise ValueError(f"ratio={self.ratio} of the model's {num_blocks} blocks rounds to {n} blocks; "
                                 f"choose a ratio that removes between 1 and {num_blocks - 1}")
            return n
        if not self.num_remove < num_blocks:
            raise ValueError(f"num_remove={self.num_remove} but the model has {num_blocks} blocks; "
                             f"remove between 1 and {num_blocks - 1}")
        return self.num_remove

    def estimator_for(self, estimator: str | None) -> str:
        """The estimator this selector reads: ``shortgpt`` -> cosine, ``gromov`` -> angular, else ``hist`` by default."""
        need = BASELINE_ESTIMATORS.get(self.selector)
        if need is None:
            if estimator in BASELINE_ESTIMATORS.values():
                raise ValueError(f"selector {self.selector!r} reads mutual information; estimator={estimator!r} is a "
                                 f"distance used by the baselines (shortgpt: cosine, gromov: angular); use hist, ksg "
                                 f"or gaussian")
            return estimator or "hist"
        if estimator is not None and estimator != need:
            raise ValueError(f"selector {self.selector!r} reads {need!r} scores (its paper's measure); got estimator="
                             f"{estimator!r}. Leave the estimator out, or set it to {need!r}")
        return need

    def companions(self, num_remove: int) -> dict[str, int]:
        """Companion tables the scoring pass adds for this selection (``companions=`` of ``score_tokens``).

        With ``verify`` and ``portfolio``: ``{"cosine": 1, "angular": num_remove,
        "gaussian": num_remove}``, the tables of the ShortGPT, Gromov and Gaussian
        Fast-Block-Select / optimal plans that verify measures too; else none.
        """
        self._check_resolved()
        return companion_runs(num_remove) if self.verify and self.portfolio else {}

    def _check_resolved(self) -> None:
        if self.verify == "auto":
            raise ValueError("verify='auto' is decided by resolve() (PruneOptions.resolved) before the run")

    def select_kwargs(self) -> dict:
        """Keyword arguments of :func:`miprun.select` (everything but the count)."""
        return {"selector": self.selector, "scale": self.scale, "log_base": self.log_base,
                "allow_touching": self.allow_touching, "max_iterations": self.max_iterations,
                "max_subsets": self.max_subsets}

    def verify_kwargs(self, measured_windows: int) -> dict:
        """Keyword arguments of :func:`miprun.selection.verify.verify` (everything but the table, count and
        measurer), for ``measured_windows`` held-back windows."""
        self._check_resolved()
        settings = self.select_kwargs()
        return {"selector": settings.pop("selector"), "k": self.verify, "portfolio": self.portfolio,
                "refine_rounds": self._refine_for(self.verify), "criterion": self.criterion,
                "screen": self.screen_windows(measured_windows) > 0, "confirm": CONFIRM, **settings}

    def _refine_for(self, verify: int) -> int:
        """``refine`` with ``"auto"`` decided for a resolved ``verify``: :data:`AUTO_REFINE` where verify runs."""
        if self.refine == "auto":
            return AUTO_REFINE if verify else 0
        return self.refine
