"""How the cuts left by removed blocks are healed, validated once."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from miprun.util.options import Options, check_choice, check_int

__all__ = ["HealOptions", "METHODS", "FITS", "OBJECTIVES", "DEFAULT_TUNE_STEPS", "DEFAULT_TUNE_BATCH", "DEFAULT_LR"]

#: Steps of ``heal_tune="auto"`` for a ``linear`` heal whose weights can run backward (the
#: README's "Healing" gives the evidence: on SmolLM2-135M and stories260K, every plan measured,
#: 40 steps from the closed form improved held-out perplexity on all three texts).
DEFAULT_TUNE_STEPS = 40
#: Windows per tuning step, at most (``prune`` takes ``min(batch_size, DEFAULT_TUNE_BATCH)``): the
#: setting measured, which also bounds the activations the backward pass keeps.
DEFAULT_TUNE_BATCH = 4
#: Adam's step size of ``heal_tune`` by default (3e-3 beat 1e-2 on SmolLM2 and matched it on stories260K).
DEFAULT_LR = 3e-3

#: ``none``: blocks are removed and nothing else changes. ``scale``: one factor per channel
#: on the MLP output of the block before each cut. ``linear``: a full ``d x d`` map there.
METHODS = ("none", "scale", "linear")
#: ``sequential``: each cut is fitted on the model with the earlier cuts already made and
#: healed (so a later map also absorbs what earlier ones left); ``dense``: every cut on the
#: unpruned model's states.
FITS = ("sequential", "dense")
#: ``mse``: the squared error summed over tokens; ``relative``: each token's squared error
#: divided by the squared norm of its target state (what the next norm sees: a relative error);
#: ``auto``: ``relative`` for ``linear``, ``mse`` for ``scale`` (see :attr:`HealOptions.objective`).
OBJECTIVES = ("auto", "mse", "relative")


@dataclass(frozen=True)
class HealOptions(Options):
    """The heal after the cut.

    Attributes
    ----------
    heal : str
        One of :data:`METHODS` (default ``none``).
    heal_fit : str
        One of :data:`FITS`: which model's states a cut is fitted on (default ``sequential``).
    heal_ridge : float
        Ridge towards the identity, relative to the mean diagonal of the Gram matrix of the
        MLP outputs.
    heal_objective : str
        One of :data:`OBJECTIVES` (default ``auto``; see :attr:`objective`).
    heal_refit : int
        After each cut, also fit a map on the MLP output of each of the next ``heal_refit``
        kept blocks, against the unpruned model's state after that block (``sequential``
        only: on the unpruned model's own states there is nothing to correct). Default 0.
    heal_tune : int or "auto"
        Optimiser steps tuning the maps against the unpruned model's next-token distribution
        (:mod:`miprun.heal.tune`), from the closed form; 0: off; ``"auto"``:
        :data:`DEFAULT_TUNE_STEPS` for a ``linear`` heal of weights that can run backward, else
        0 (:meth:`tune_steps_for`). The tuned maps are kept only when they beat the closed
        form on the held-back windows.
    heal_tune_lr : float
        Adam's step size for ``heal_tune``.
    """

    heal: str = "none"
    heal_fit: str = "sequential"
    heal_ridge: float = 1e-4
    heal_objective: str = "auto"
    heal_refit: int = 0
    heal_tune: int | str = "auto"
    heal_tune_lr: float = DEFAULT_LR

    def __post_init__(self) -> None:
        check_choice("heal", self.heal, METHODS)
        check_choice("heal_fit", self.heal_fit, FITS)
        check_choice("heal_objective", self.heal_objective, OBJECTIVES)
        check_int("heal_refit", self.heal_refit, low=0)
        if self.heal_tune != "auto":
            check_int("heal_tune", self.heal_tune, low=0)
            if self.heal_tune and self.heal == "none":
                raise ValueError(f"heal_tune={self.heal_tune} tunes the heal's maps: choose a heal (--heal linear or "
                                 f"scale), or heal_tune=0")
        if isinstance(self.heal_tune_lr, bool) or not isinstance(self.heal_tune_lr, (int, float)) \
                or not 0 < self.heal_tune_lr < math.inf:
            raise ValueError(f"heal_tune_lr must be a number > 0, got {self.heal_tune_lr!r}")
        if self.heal_refit and self.heal == "none":
            raise ValueError(f"heal_refit={self.heal_refit} refits blocks after the healed cuts: choose a heal "
                             f"(--heal linear or scale), or heal_refit=0")
        if self.heal_refit and self.heal_fit != "sequential":
            raise ValueError(f"heal_refit={self.heal_refit} refits the blocks after a cut on the pruned, healed model's "
                             f"states; with heal_fit='dense' they are the unpruned model's own, with nothing to "
                             f"correct. Use heal_fit='sequential' (the default) or heal_refit=0")
        value = self.heal_ridge
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value or not math.isfinite(value):
            raise ValueError(f"heal_ridge must be a number >= 0, got {value!r}")

    @property
    def objective(self) -> str:
        """The objective used: ``auto`` is ``relative`` for a full map and ``mse`` for a channel scale.

        Measured on SmolLM2-135M (benchmarks/RESULTS.md, section Healing): on a 9-block run a
        full map fitted by plain squared error gave a perplexity of 561 and by relative error
        109; on a 6-block plan (unhealed 103) a channel scale fitted by relative error gave
        266 and by plain squared error 93. A scale has one factor per channel: weighting down
        the few tokens with very large states leaves the factors of the channels those tokens
        carry to the other tokens, and the cut then fails on exactly those tokens.
        """
        if self.heal_objective != "auto":
            return self.heal_objective
        return "mse" if self.heal == "scale" else "relative"

    @property
    def tune_steps(self) -> int:
        """The tuning steps asked for where the weights can run backward (``"auto"`` decided; none without a heal)."""
        return self.tune_steps_for(streamed=False)

    @property
    def tune_asked(self) -> int:
        """Tuning steps asked for by number (not ``"auto"``): what a run that streams must refuse."""
        return 0 if self.heal_tune == "auto" or not self.active else self.heal_tune

    def tune_steps_for(self, *, streamed: bool) -> int:
        """The tuning steps this heal takes on weights that are ``streamed`` or not.

        ``"auto"`` tunes only a ``linear`` heal (``scale`` is not measured) and only where the
        weights can run forward and backward: streamed weights get the closed form alone.
        An explicit number is taken as it is; a caller that streams refuses it beforehand.
        """
        if not self.active:
            return 0
        if self.heal_tune != "auto":
            return self.heal_tune
        return 0 if streamed or self.heal != "linear" else DEFAULT_TUNE_STEPS

    @property
    def active(self) -> bool:
        return self.heal != "none"

    @classmethod
    def from_dict(cls, data: dict) -> "HealOptions":
        """Read back recorded options; ``heal_held_out`` (before the one calibration split) is dropped."""
        data = dict(data)
        if data.pop("heal_held_out", None) is not None:
            warnings.warn("heal_held_out is no longer an option: the heal checks its maps on the held-back "
                          "calibration windows (held_back)", DeprecationWarning, stacklevel=2)
        return super().from_dict(data)
