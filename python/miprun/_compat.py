"""Deprecated module names of miprun 0.1, kept importable for one release.

0.2 arranged the package by stage (see the README's layout); ``import miprun.score`` and the
like still work, with a DeprecationWarning naming the new module. Removed in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["MOVED", "install"]

#: 0.1 module -> 0.2 module.
MOVED = {
    "miprun.families": "miprun.models.families", "miprun.models": "miprun.models.loading",
    "miprun.checkpoint": "miprun.models.checkpoint", "miprun.calibrate": "miprun.calibration.windows",
    "miprun.blockrun": "miprun.hidden.capture", "miprun.layerwise": "miprun.hidden.runner",
    "miprun.stream": "miprun.hidden.stream", "miprun.device_map": "miprun.hidden.device_map",
    "miprun.memory": "miprun.hidden.memory", "miprun.table": "miprun.scoring.table",
    "miprun.window": "miprun.scoring.scorers", "miprun.score": "miprun.scoring.score",
    "miprun.distributed": "miprun.scoring.distributed", "miprun.plan": "miprun.selection.plan",
    "miprun.surgery": "miprun.output.surgery", "miprun.shards": "miprun.output.shards",
    "miprun.save": "miprun.output.save", "miprun.report": "miprun.output.report",
    "miprun.perplexity": "miprun.evaluate.perplexity", "miprun.speed": "miprun.evaluate.speed",
    "miprun.zeroshot": "miprun.evaluate.zeroshot", "miprun.prune": "miprun.pipeline.prune",
    "miprun.compare": "miprun.pipeline.compare", "miprun.demo": "miprun.pipeline.demo",
    "miprun.eval_cli": "miprun.cli.evaluate", "miprun.select": "miprun.selection.select",
}
# ``miprun.prune`` and ``miprun.select`` are also the package's functions: importing a module under
# those names would rebind them, so those two old names are filed directly (no warning possible).
_FILED = ("miprun.prune", "miprun.select")
# miprun.models, miprun.evaluate and miprun.cli are packages now: their old names are the packages
# themselves, so only module names that no longer exist are redirected.
_REDIRECT = {old: new for old, new in MOVED.items() if old not in ("miprun.models", "miprun.cli") + _FILED}


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _REDIRECT:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = _REDIRECT[spec.name]
        warnings.warn(f"{spec.name} is now {new}; the old name goes in miprun 0.3", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        pass  # create_module returned the new module, already executed; importlib files it under the old name


def install() -> None:
    """Make the 0.1 module names importable (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
    for old in _FILED:
        sys.modules.setdefault(old, importlib.import_module(MOVED[old]))
