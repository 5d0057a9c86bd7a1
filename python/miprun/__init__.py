"""miprun: depth pruning of large language models by mutual information (MI-PRUN)."""

from __future__ import annotations

from miprun.mi import mutual_information
from miprun.selection.plan import Plan
from miprun.pipeline.prune import PruneResult, prune
from miprun.scoring.score import score_blocks
from miprun.selection.select import select
from miprun.output.surgery import remove_blocks
from miprun.scoring.table import ScoreTable, information_coefficient

from miprun._native import package_version as _package_version

__version__ = _package_version()  # pyproject.toml's [project] version, the one source

__all__ = [
    "mutual_information",
    "information_coefficient",
    "ScoreTable",
    "Plan",
    "score_blocks",
    "select",
    "remove_blocks",
    "prune",
    "PruneResult",
    "__version__",
]
