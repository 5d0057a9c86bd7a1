"""miprun: depth pruning of large language models by mutual information (MI-PRUN)."""

from __future__ import annotations

from .mi import mutual_information
from .plan import Plan
from .table import ScoreTable, information_coefficient

__version__ = "0.1.0"

__all__ = [
    "mutual_information",
    "information_coefficient",
    "ScoreTable",
    "Plan",
    "__version__",
]
