"""A written checkpoint's ``auto_map`` must name code that is there, or go.

``config.json``'s ``auto_map`` (``{"AutoModelForCausalLM": "modeling_x.XForCausalLM", ...}``)
tells transformers to import classes from ``.py`` files beside the weights. A pruned
checkpoint keeps the input's config, so it names those files too: they are copied from
the input folder, or - when they are absent there and transformers has the architecture
itself - the entries are dropped, so that the output loads without them.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

__all__ = ["carry_remote_code"]


def carry_remote_code(out_dir, source_dir=None) -> None:
    """Copy the ``.py`` files ``out_dir/config.json``'s ``auto_map`` names from ``source_dir``, or drop entries.

    Parameters
    ----------
    out_dir : path
        The folder being written, with its ``config.json`` already there.
    source_dir : path, optional
        The input model folder (None for a model from the Hub: nothing can be copied).

    An entry whose files are absent is dropped when ``model_type`` is native to
    transformers, and kept with a warning otherwise (the output then needs those files to
    load). Entries naming another Hub repository (``"owner/repo--module.Class"``) are kept.
    """
    out_dir = Path(out_dir)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict) or not auto_map:
        return
    source = Path(source_dir) if source_dir is not None else None
    kept, absent = {}, []
    for auto_class, refs in auto_map.items():
        files = _module_files(refs)
        if not files:
            kept[auto_class] = refs
        elif source is not None and all((source / f).is_file() for f in files):
            for f in _with_relative_imports(source, files):
                shutil.copy2(source / f, out_dir / f)
            kept[auto_class] = refs
        elif _is_native(config.get("model_type")):
            continue  # transformers builds the architecture itself: the entry only breaks loading
        else:
            kept[auto_class] = refs
            absent += files
    if absent:
        warnings.warn(f"config.json's auto_map names {', '.join(sorted(set(absent)))}, not found in "
                      f"{source or 'a local input folder'}; copy them into {out_dir} to load the output",
                      RuntimeWarning, stacklevel=2)
    if kept != auto_map:
        if kept:
            config["auto_map"] = kept
        else:
            del config["auto_map"]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _module_files(refs) -> list[str]:
    """The local ``.py`` files of one auto_map value (a class path, or a [slow, fast] tokenizer pair)."""
    files = []
    for ref in refs if isinstance(refs, (list, tuple)) else [refs]:
        if isinstance(ref, str) and ref and "--" not in ref:  # "repo--module.Class" lives on the Hub
            files.append(ref.rsplit(".", 1)[0].replace(".", "/") + ".py")
    return sorted(set(files))


def _with_relative_imports(source: Path, files: list[str]) -> list[str]:
    """``files`` and the local modules they import (``from .configuration_x import ...``)."""
    out = set(files)
    for f in files:
        out.update(str(Path(p).relative_to(source)) for p in get_relative_import_files(str(source / f))
                   if Path(p).is_file())
    return sorted(out)


def _is_native(model_type) -> bool:
    return model_type in CONFIG_MAPPING_NAMES
