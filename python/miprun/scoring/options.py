"""How runs are scored: the estimator and its settings, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from miprun.mi import REDUCTIONS
from miprun.mi.backend import BACKENDS
from miprun.mi.binning import BIN_RULES, MAX_BINS
from miprun.mi.hist import BIAS_CORRECTIONS
from miprun.mi.ksg import DEFAULT_PROJECTION_DIM
from miprun.mi.scale import DISTANCE_ESTIMATORS
from miprun.util.options import Options, check_choice, check_int

__all__ = ["ScoringOptions", "BINNINGS", "DEFAULT_EDGE_TOKENS", "TABLE_REDUCTIONS"]

#: Quantile edges use every token row up to this many, else a seeded subset of this size.
DEFAULT_EDGE_TOKENS = 65_536
BINNINGS = ("quantile", "uniform")
#: The reductions a score table takes, per estimator: all of miprun.mi's but "joint", the MI
#: of two whole vectors (a state's thousands of columns at once), which no window holds.
TABLE_REDUCTIONS = {est: tuple(r for r in rs if r != "joint") for est, rs in REDUCTIONS.items()}


@dataclass(frozen=True)
class ScoringOptions(Options):
    """Settings of the score table.

    Attributes
    ----------
    estimator : {"hist", "ksg", "gaussian", "cosine", "angular"}
        As :func:`miprun.mutual_information`; ``cosine`` and ``angular`` are the ShortGPT
        and Gromov baselines (not MI) and ignore ``reduction``.
    reduction : {"pooled", "per_dim", "projection"}
        ``joint`` (:func:`miprun.mutual_information`) is not a score-table reduction.
    max_run : int or None
        Longest run scored; None: the number of blocks to remove (1 when unknown).
    bins, binning, bias_correction
        Histogram settings: ``bins`` an int in 2..256 or a rule (auto, sqrt, sturges,
        rice) counted over the tokens of all processes.
    k, max_samples, projection_dim
        KSG settings.
    skip_first : int
        Positions left out at the start of every window (attention-sink outliers).
    edge_tokens : int
        Histogram edges come from all token rows up to this many, else a seeded subset.
    seed : int
        Seeds the edge subset and KSG's subsamples and jitter.
    backend : {"auto", "reference", "native", "triton"}
        Implementation of the estimator steps (``auto``: by device).
    """

    estimator: str = "hist"
    reduction: str = "pooled"
    max_run: int | None = None
    bins: int | str = "auto"
    binning: str = "quantile"
    k: int = 3
    bias_correction: str | None = None
    max_samples: int | None = None
    projection_dim: int = DEFAULT_PROJECTION_DIM
    skip_first: int = 0
    edge_tokens: int = DEFAULT_EDGE_TOKENS
    seed: int = 0
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_choice("estimator", self.estimator, tuple(TABLE_REDUCTIONS))
        if self.reduction == "joint":
            raise ValueError("reduction='joint' (the MI of two whole vectors) is not a score-table reduction: a "
                             "table scores runs with 'pooled', 'per_dim' or 'projection'; for the joint MI of two "
                             "arrays use miprun.mutual_information(x, y, reduction='joint') or `miprun mi X Y`")
        if self.estimator not in DISTANCE_ESTIMATORS and self.reduction not in TABLE_REDUCTIONS[self.estimator]:
            raise ValueError(f"estimator {self.estimator!r} supports reduction {TABLE_REDUCTIONS[self.estimator]}, "
                             f"got {self.reduction!r}")
        # the baselines ignore the reduction, but a misspelt one is still refused
        check_choice("reduction", self.reduction, sorted({r for rs in TABLE_REDUCTIONS.values() for r in rs}))
        check_int("max_run", self.max_run, low=1, allow_none=True)
        bins_ok = (isinstance(self.bins, int) and not isinstance(self.bins, bool) and 2 <= self.bins <= MAX_BINS)
        if not bins_ok and self.bins not in BIN_RULES:
            raise ValueError(f"bins must be an int in 2..{MAX_BINS} or one of {BIN_RULES}, got {self.bins!r}")
        check_choice("binning", self.binning, BINNINGS)
        check_choice("bias_correction", self.bias_correction, BIAS_CORRECTIONS)
        check_int("k", self.k, low=1)
        check_int("max_samples", self.max_samples, low=2, allow_none=True)
        check_int("projection_dim", self.projection_dim, low=1)
        check_int("skip_first", self.skip_first, low=0)
        check_int("edge_tokens", self.edge_tokens, low=1)
        check_int("seed", self.seed)
        check_choice("backend", self.backend, BACKENDS)

    def run_length(self, num_remove: int | None, num_blocks: int) -> int:
        """The longest run to score: ``max_run``, else the number of blocks to remove (1 when unknown)."""
        run = self.max_run if self.max_run is not None else max(1, int(num_remove) if num_remove else 1)
        if run > num_blocks:
            if self.max_run is not None:
                raise ValueError(f"max_run={run} but the model has {num_blocks} blocks; use max_run <= {num_blocks}")
            run = num_blocks
        return run
