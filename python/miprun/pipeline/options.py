"""Every setting of a pruning run in one object: the options of each step, checked together once.

:class:`PruneOptions` holds the calibration, execution, scoring, selection and output
options. It is what ``report.json`` records under ``settings.options`` and what
``miprun prune --from-report`` reads back to reproduce a plan.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from miprun.calibration.options import CalibrationOptions
from miprun.heal.options import HealOptions
from miprun.hidden.options import ExecutionOptions
from miprun.output.options import OutputOptions
from miprun.scoring.options import ScoringOptions
from miprun.selection.options import SINGLE_BLOCK_SELECTORS, SelectionOptions
from miprun.util.options import route

__all__ = ["PruneOptions", "ReportedRun"]

_SECTIONS = {"calibration": CalibrationOptions, "execution": ExecutionOptions, "scoring": ScoringOptions,
             "selection": SelectionOptions, "heal": HealOptions, "output": OutputOptions}


@dataclass(frozen=True)
class PruneOptions:
    """The options of every step of :func:`miprun.prune`: calibration, execution, scoring, selection, heal, output.

    Build it from keyword arguments with :meth:`from_flat` (``num_remove=8, estimator="ksg",
    out_dir="pruned"``), or from the step objects themselves. A baseline selector fixes
    its estimator (``shortgpt``: cosine, ``gromov``: angular); any other reads MI.
    """

    selection: SelectionOptions
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)
    heal: HealOptions = field(default_factory=HealOptions)
    output: OutputOptions = field(default_factory=OutputOptions)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"PruneOptions.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        self.selection.estimator_for(self.scoring.estimator)  # raises when the pair does not go together
        if self.execution.offload is True and self.output.out_dir is None:
            raise ValueError("offload=True writes the pruned checkpoint shard by shard: give out_dir (--out)")
        if self.heal.tune_asked and self.execution.offload is True:
            raise ValueError(f"heal_tune={self.heal.tune_asked} runs the pruned model forward and backward at every "
                             f"step, which needs the weights in memory or placed by a device map (--device-map), not "
                             f"streamed one block at a time (--offload): drop --offload, or set --heal-tune 0")
        if self.heal.active and self.output.format == "gguf":
            raise ValueError(f"heal={self.heal.heal!r} changes the weights of the blocks before each cut, and "
                             f"format='gguf' copies the input's quantised tensors as they are: use format='hf' "
                             f"(--format hf) to save a healed model, or heal='none'")

    @classmethod
    def from_flat(cls, **kwargs: Any) -> "PruneOptions":
        """Options from flat keyword arguments, each routed to the step that owns it.

        ``seed`` seeds both the calibration windows and the estimator. Deprecated:
        ``num_blocks`` for the number of blocks to remove (use ``num_remove``), and
        ``select_options={...}`` (give its keys directly).
        """
        if "num_blocks" in kwargs:
            warnings.warn("prune(num_blocks=...) is deprecated: it names the number of blocks to REMOVE; use "
                          "num_remove=... (num_blocks is the model's depth elsewhere)", DeprecationWarning,
                          stacklevel=3)
            if kwargs.get("num_remove") is not None:
                raise ValueError("give num_remove only (num_blocks is its deprecated name)")
            kwargs["num_remove"] = kwargs.pop("num_blocks")
        kwargs.update(kwargs.pop("select_options", None) or {})
        estimator = kwargs.pop("estimator", None)
        calib, execution, scoring, selection, heal, output = route(kwargs, *_SECTIONS.values())
        selection = SelectionOptions(**selection)
        scoring["estimator"] = selection.estimator_for(estimator)
        return cls(selection=selection, scoring=ScoringOptions(**scoring), calibration=CalibrationOptions(**calib),
                   execution=ExecutionOptions(**execution), heal=HealOptions(**heal), output=OutputOptions(**output))

    def resolved(self, n_windows: int) -> "PruneOptions":
        """These options with ``verify="auto"`` decided for ``n_windows`` calibration windows (see
        :meth:`SelectionOptions.resolve`)."""
        selection = self.selection.resolve(n_windows=n_windows)
        return self if selection is self.selection else dataclasses.replace(self, selection=selection)

    def max_run(self, num_remove: int, num_blocks: int) -> int:
        """Longest run to score: ``scoring.max_run``, else 1 for single-block selectors, else ``num_remove``."""
        # the portfolio's selectors read runs; an undecided verify="auto" counts as on (its in-memory value)
        portfolio = self.selection.verify and self.selection.portfolio
        if self.scoring.max_run is None and self.selection.selector in SINGLE_BLOCK_SELECTORS and not portfolio:
            return 1
        return self.scoring.run_length(num_remove, num_blocks)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: getattr(self, f.name).to_dict() for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> "PruneOptions":
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ValueError(f"unknown option sections {unknown}; known: {list(_SECTIONS)}")
        return cls(**{name: c.from_dict(data.get(name, {})) for name, c in _SECTIONS.items() if name in data})


@dataclass(frozen=True)
class ReportedRun:
    """What a ``report.json`` says was run: the model, the calibration source and its tokens, the options."""

    model: str
    calibration: str
    calibration_sha256: str | None
    options: PruneOptions

    @classmethod
    def read(cls, path: str | Path) -> "ReportedRun":
        """Read the run a miprun ``report.json`` records; refuse a file that is not one."""
        p = Path(path)
        try:
            report = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {p} as a miprun report.json: {exc}") from None
        settings = report.get("settings") if isinstance(report, dict) else None
        if not isinstance(settings, dict) or "options" not in settings or "format_version" not in report:
            raise ValueError(f"{p} is not a miprun report.json with recorded options (written by miprun >= 0.2)")
        calib = settings.get("calibration") or {}
        source = calib.get("source")
        if not source or source == "token ids":
            raise ValueError(f"{p} records a run on token ids given in Python, not a calibration file: "
                             f"it cannot be re-run from the command line")
        return cls(model=str(settings.get("model")), calibration=str(source),
                   calibration_sha256=calib.get("sha256"), options=PruneOptions.from_dict(settings["options"]))
