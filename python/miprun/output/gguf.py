"""Write a pruned GGUF model: the input file's kept blocks copied as they are, renumbered.

No weight is dequantised or requantised: each kept tensor's bytes are copied with its
quantisation type, so the file shrinks by the removed blocks' share and the kept blocks
compute exactly what they did. ``blk.N.*`` tensors are renumbered ``0..kept-1``,
``{arch}.block_count`` is set to the kept count, and every per-layer metadata array (an
array under ``{arch}.`` whose length is the block count: per-layer head counts, feed-forward
sizes, sliding-window patterns) keeps the entries of the kept blocks. When the blocks'
attention kinds alternate (sliding-window / full, e.g. Gemma 3) and the file has no per-layer
pattern, a ``{arch}.attention.sliding_window_pattern`` array records the kinds the kept blocks
had, since readers otherwise derive them anew from the renumbered indices. The file is read
and written with the ``gguf`` package (``GGUFReader``, ``GGUFWriter``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from miprun.models.gguf import FULL, SLIDING, find_gguf, layer_types_of, load_gguf_config, pattern_key, require_gguf
from miprun.output.guard import absolute_path, atomic_output_dir
from miprun.output.save import write_report_and_plots

__all__ = ["write_pruned_gguf", "pruned_gguf_plan"]

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def _value(field):
    """A metadata field's value as GGUFWriter.add_key_value takes it (arrays as lists)."""
    return field.contents()


def pruned_gguf_plan(reader, removed_blocks: Sequence[int]) -> tuple[str, int, list[int]]:
    """``(arch, block count, kept blocks)`` of the file ``reader`` reads, with ``removed_blocks`` checked."""
    arch = reader.fields["general.architecture"].contents()
    key = f"{arch}.block_count"
    if key not in reader.fields:
        raise ValueError(f"the GGUF file has no {key}: it is not a model miprun can prune")
    total = int(reader.fields[key].contents())
    removed = sorted({int(i) for i in removed_blocks})
    if len(removed) != len(list(removed_blocks)):
        raise ValueError(f"removed_blocks {list(removed_blocks)} names a block twice")
    if any(i < 0 or i >= total for i in removed):
        raise ValueError(f"removed_blocks {removed} must lie in 0..{total - 1} (the file has {total} blocks)")
    if len(removed) >= total:
        raise ValueError(f"cannot remove all {total} blocks")
    return arch, total, [i for i in range(total) if i not in set(removed)]


def write_pruned_gguf(src_file: str | os.PathLike, removed_blocks: Sequence[int], out_dir: str | os.PathLike, *,
                      report: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
                      plots: Mapping[str, Callable[[Path], Any] | bytes] | None = None, overwrite: bool = False,
                      protect: Sequence = ()) -> Path:
    """Write the GGUF model ``src_file`` without ``removed_blocks`` into ``out_dir``, atomically.

    Parameters
    ----------
    src_file : path
        The input ``.gguf`` file (or a folder holding exactly one); never written to.
    removed_blocks : sequence of int
        0-based indices of the blocks to drop.
    out_dir : path
        Output folder: it gets the pruned file (the input's file name), the plots and
        ``report.json``; must not exist unless ``overwrite`` (see :func:`check_output_dir`).
    report : mapping or callable returning one, optional
        Written last as ``report.json``.
    plots : mapping of file name to callable or bytes, optional
        As :func:`miprun.output.save.save_pruned`.
    overwrite : bool
        Replace an earlier miprun output at ``out_dir``.
    protect : sequence of paths
        Other inputs (calibration text) ``out_dir`` may not overlap; the input file's folder
        is always protected.

    Returns
    -------
    pathlib.Path
        The absolute path of ``out_dir``.
    """
    require_gguf()
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys  # optional dependency (the gguf extra)

    src = find_gguf(src_file)
    if src is None:
        raise ValueError(f"{src_file} is not a GGUF model (a .gguf file, or a folder holding exactly one); "
                         f"format='gguf' writes GGUF only from a GGUF input: use format='hf' (--format hf)")
    reader = GGUFReader(src)
    arch, total, kept = pruned_gguf_plan(reader, removed_blocks)
    new_index = {old: new for new, old in enumerate(kept)}
    pattern = _kept_pattern(src, reader, arch, total, kept)

    with atomic_output_dir(out_dir, overwrite=overwrite, source_dir=src.parent, protect=protect) as tmp:
        writer = GGUFWriter(tmp / src.name, arch=arch, endianess=reader.endianess)
        for name, field in reader.fields.items():
            # the header's own fields are virtual; GGUFWriter writes general.architecture itself
            if name.startswith("GGUF.") or name == Keys.General.ARCHITECTURE:
                continue
            vtype = field.types[0]
            sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            value = _value(field)
            if name == f"{arch}.block_count":
                value = len(kept)
            elif name == Keys.General.ALIGNMENT:
                writer.data_alignment = int(value)
            elif _per_layer(name, arch, vtype, value, total):
                value = [value[i] for i in kept]
            writer.add_key_value(name, value, vtype, sub_type=sub_type)
        if pattern is not None:
            writer.add_key_value(pattern_key(arch), pattern, GGUFValueType.ARRAY, sub_type=GGUFValueType.BOOL)
        for tensor in reader.tensors:
            name = tensor.name
            m = _BLOCK.match(name)
            if m is not None:
                old = int(m.group(1))
                if old not in new_index:
                    continue
                name = f"blk.{new_index[old]}.{m.group(2)}"
            writer.add_tensor(name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type,
                              tensor_endianess=reader.endianess)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        write_report_and_plots(tmp, report, plots)
    return absolute_path(out_dir)


def _per_layer(name: str, arch: str, vtype, value, total: int) -> bool:
    """Whether a metadata value is a per-layer array: an array under ``{arch}.`` with one entry per block."""
    from gguf import GGUFValueType  # optional dependency (the gguf extra)

    return vtype == GGUFValueType.ARRAY and name.startswith(f"{arch}.") and len(value) == total


def _kept_pattern(src: Path, reader, arch: str, total: int, kept: list[int]) -> list[bool] | None:
    """The kept blocks' sliding-window flags, when they must be written down (see the module doc); else None."""
    if pattern_key(arch) in reader.fields:
        return None  # a per-layer array already: trimmed with the others
    try:
        types = layer_types_of(load_gguf_config(src))
    except ValueError:  # an architecture transformers cannot read: it knows no per-block kinds to keep
        return None
    if types is None or len(types) != total or len(set(types)) < 2 or not set(types) <= {SLIDING, FULL}:
        return None
    return [types[i] == SLIDING for i in kept]
