"""miprun: depth pruning of large language models by mutual information (MI-PRUN)."""

from __future__ import annotations

from .mi import mutual_information
from .plan import Plan
from .prune import PruneResult, prune
from .score import score_blocks
from .select import select
from .surgery import remove_blocks
from .table import ScoreTable, information_coefficient

__version__ = "0.1.0"

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
