"""miprun: depth pruning of large language models by mutual information (MI-PRUN)."""

from __future__ import annotations

from miprun import _compat
from miprun.calibration.options import CalibrationOptions
from miprun.heal.fit import heal_cuts
from miprun.heal.options import HealOptions
from miprun.hidden.options import ExecutionOptions
from miprun.measure import Measurer
from miprun.mi import information_coefficient, mutual_information
from miprun.output.options import OutputOptions
from miprun.output.surgery import remove_blocks
from miprun.pipeline.options import PruneOptions
from miprun.pipeline.prune import PruneResult, prune
from miprun.scoring.options import ScoringOptions
from miprun.scoring.score import score_blocks
from miprun.scoring.table import ScoreTable
from miprun.selection.options import SelectionOptions
from miprun.selection.plan import Plan
from miprun.selection.select import select
from miprun.selection.sleb import sleb
from miprun.selection.verify import companion_runs, verify

from miprun._native import package_version as _package_version

__version__ = _package_version()  # pyproject.toml's [project] version, the one source

_compat.install()  # the 0.1 module names, deprecated

__all__ = [
    "mutual_information",
    "information_coefficient",
    "ScoreTable",
    "Plan",
    "score_blocks",
    "select",
    "verify",
    "companion_runs",
    "sleb",
    "Measurer",
    "remove_blocks",
    "prune",
    "PruneResult",
    "PruneOptions",
    "CalibrationOptions",
    "ExecutionOptions",
    "ScoringOptions",
    "SelectionOptions",
    "OutputOptions",
    "HealOptions",
    "heal_cuts",
    "__version__",
]
