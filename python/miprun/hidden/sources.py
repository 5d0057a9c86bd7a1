"""Where the blocks' weights come from: the :class:`BlockSource` interface and :func:`open_source`.

The runner (:func:`miprun.hidden.runner.iter_hidden_states`) does the capture of the blocks'
inputs and the block loop once; a source only says where the model skeleton, the blocks and
the devices are, and readies each block for its turn:

- :class:`~miprun.hidden.in_memory.InMemorySource`: a loaded model (blocks held on another
  device move to the compute device for their turn and back);
- :class:`~miprun.hidden.stream.StreamedSource`: a meta-device model whose block weights are
  read from the safetensors shards one block at a time (``offload``);
- :class:`~miprun.hidden.device_map.DeviceMapSource`: a model dispatched by accelerate over
  several devices (``device_map``).

:func:`open_source` is the one place that picks among them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from miprun.hidden.device_map import DEVICE_MAPS, DeviceMapSource
from miprun.hidden.in_memory import InMemorySource, load_in_memory
from miprun.hidden.stream import prepare_offload, resolve_offload
from miprun.models.gguf import check_placement as check_gguf_placement, find_gguf
from miprun.models.loading import check_causal_lm, load_config, load_model, local_dir

__all__ = ["DEVICE_MAPS", "BlockSource", "open_source", "parse_max_memory"]


@runtime_checkable
class BlockSource(Protocol):
    """The weights of a causal LM's blocks, made ready one block at a time for the runner.

    A sweep (:class:`miprun.hidden.runner.Sweep`) calls, in this order: ``enter_capture()``;
    the skeleton's forward up to its blocks (under ``torch.inference_mode``);
    ``leave_capture()``; then for each block ``i`` ``enter_block(i)``, the block over all
    batches on ``block_device(i)`` (once or more), ``leave_block(i)``; a measurement may then
    call ``enter_tail()``, the skeleton's forward with its blocks bypassed, ``leave_tail()``;
    and ``close()`` at the end, also when the run stops early. A source may run again after
    ``close()``.

    Attributes
    ----------
    config : transformers.PretrainedConfig
        The model's config, read once.
    model : nn.Module
        The model skeleton whose forward is run up to the blocks to capture their inputs.
        Its blocks' weights need not be real during the capture.
    blocks : nn.ModuleList
        The decoder blocks, in order, as the skeleton's forward calls them.
    num_blocks : int
        ``len(blocks)``, the ``T`` of ``h_0..h_T``.
    device : torch.device
        The compute device: where ``h_0`` and the blocks' captured arguments are put.
    input_device : torch.device
        Where the token ids go for the skeleton's forward (the embedding's device).
    kind : str
        ``"in_memory"``, ``"streamed"`` or ``"device_map"``: a name for reports and messages.
        Behaviour is asked of the capabilities below, never of this name.
    holds_model : bool
        The caller keeps a loaded model: blocks are removed from it and heals folded into it
        in place, and it is saved whole. Otherwise the checkpoint is rewritten from its
        shards (with any heal folded as the tensors are written).
    streams_weights : bool
        Each block's weights are read from the shards for its turn (a sweep re-reads them).
    description : str
        Label of the progress bar.
    """

    config: Any
    model: nn.Module
    blocks: nn.ModuleList
    device: torch.device
    input_device: torch.device
    kind: str
    holds_model: bool
    streams_weights: bool
    description: str

    @property
    def num_blocks(self) -> int: ...

    def enter_capture(self) -> None:
        """Make what runs before block 0 (embedding, rotary tables) ready on its device."""

    def leave_capture(self) -> None:
        """Release what :meth:`enter_capture` made ready, if it is not needed any more."""

    def block_device(self, i: int) -> torch.device:
        """Where block ``i`` computes; its input state and arguments are moved there."""

    def enter_block(self, i: int) -> None:
        """Make block ``i``'s weights ready on :meth:`block_device` for its turn."""

    def leave_block(self, i: int) -> None:
        """Block ``i`` is done: release or move back its weights."""

    def enter_tail(self) -> torch.device:
        """Make what runs before and after the blocks (embedding, final norm, LM head) ready for a forward
        whose blocks are bypassed; return the device the final states go to."""

    def leave_tail(self) -> None:
        """Release what :meth:`enter_tail` made ready."""

    def close(self) -> None:
        """The run is over (or stopped): restore whatever the source changed."""


# accelerate reads these units (a lower-case "b" would mean bits there, so the case is exact)
_SIZE = re.compile(r"^(\d+(\.\d+)?)(GiB|MiB|KiB|GB|MB|KB)$|^\d+$")
_NAMED_DEVICES = ("cpu", "disk", "mps")


def parse_max_memory(text: str) -> dict:
    """Parse a per-device memory budget such as ``"0=20GiB,1=20GiB,cpu=60GiB"``.

    Parameters
    ----------
    text : str
        Comma-separated ``device=size`` pairs. A device is a GPU index (``0``, or ``cuda:0``),
        ``cpu``, ``disk`` or ``mps``; a size is a number with a unit ``GiB``, ``MiB``,
        ``KiB``, ``GB``, ``MB``, ``KB`` (e.g. ``20GiB``, ``1.5GB``) or a whole number of bytes.

    Returns
    -------
    dict
        ``{0: "20GiB", "cpu": "60GiB"}``: GPU indices as ints, sizes as written (byte counts
        as ints), as accelerate's ``max_memory`` takes them.

    Raises
    ------
    ValueError
        An empty string, a pair without ``=``, an unknown device, a size without a known
        unit, or a device given twice.
    """
    example = "e.g. '0=20GiB,cpu=60GiB'"
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"max_memory is empty; give device=size pairs, {example}")
    out: dict = {}
    for pair in text.split(","):
        key, sep, size = (s.strip() for s in pair.partition("="))
        if not sep or not key or not size:
            raise ValueError(f"max_memory entry {pair.strip()!r} is not device=size; {example}")
        device = _parse_device(key)
        if not _SIZE.match(size):
            raise ValueError(f"max_memory size {size!r} for {key} is not a number with a unit GiB, MiB, KiB, GB, "
                             f"MB or KB, nor a whole number of bytes; {example}")
        if device in out:
            raise ValueError(f"max_memory names device {key} twice")
        out[device] = int(size) if size.isdigit() else size
    return out


def _parse_device(key: str):
    """A ``max_memory`` key: GPU index (int) or a named device."""
    index = key[5:] if key.lower().startswith("cuda:") else key
    if index.isdigit():
        return int(index)
    if key.lower() in _NAMED_DEVICES:
        return key.lower()
    raise ValueError(f"max_memory device {key!r} is not a GPU index (0, 1, ... or cuda:0) nor one of "
                     f"{', '.join(_NAMED_DEVICES)}")


def open_source(model, *, offload: bool | str = False, device_map=None, max_memory=None, device=None, dtype=None,
                trust_remote_code: bool = False, n_samples: int = 128, seq_len: int = 2048, batch_size: int = 8,
                window_bytes: int = 0, offload_folder=None, attn_implementation: str | None = None,
                config=None) -> BlockSource:
    """The block source for a model: in memory, streamed from its shards, or placed by a device map.

    Parameters
    ----------
    model : transformers PreTrainedModel, BlockSource, str or Path
        A loaded causal LM, a local checkpoint folder, a hub id or a GGUF model (loaded
        dequantised), or a source opened already (returned as it is). Streaming and device
        maps need a local safetensors checkpoint.
    offload : bool or "auto"
        Stream the weights one block at a time from the safetensors shards. ``"auto"``
        streams a local folder whose weights plus two hidden states would not fit in the
        free memory of ``device`` (:func:`miprun.hidden.stream.resolve_offload`); with a
        ``device_map``, ``"auto"`` leaves the placement to the map.
    device_map : "auto", "balanced", "sequential" or dict, optional
        Spread the model over the devices with accelerate (``"auto"`` is ``"balanced"``); a
        dict maps module names to ``0``, ``"cuda:1"``, ``"cpu"`` or ``"disk"``.
    max_memory : dict or str, optional
        Per-device budget for a named ``device_map``, e.g. ``{0: "20GiB", "cpu": "60GiB"}`` or
        ``"0=20GiB,cpu=60GiB"`` (:func:`parse_max_memory`).
    device : str or torch.device, optional
        Compute device (default: the loaded model's embedding device; CUDA when available for
        streaming; the CPU for a model loaded here). Not with ``device_map``, which places
        every module itself.
    dtype : str or torch.dtype, optional
        Dtype to load or stream the weights in (default: the checkpoint's); ignored for a
        loaded model.
    trust_remote_code : bool
        Allow the checkpoint's own code (config and model classes).
    n_samples, seq_len, batch_size : int
        Calibration shape and samples per block call, for the streaming memory plan.
    window_bytes : int
        Bytes the scorer keeps for its window, counted in the streaming memory check.
    offload_folder : path, optional
        Where modules a device map puts on ``"disk"`` are kept (default: a temporary folder).
    attn_implementation : str, optional
        Attention implementation of a model built here (default: transformers' choice).
    config : transformers.PretrainedConfig, optional
        The model's config when the caller has read it already (e.g. ``inspect_model(...).config``):
        it is not read again.

    Returns
    -------
    BlockSource
        For :func:`miprun.hidden.runner.iter_hidden_states`.

    Raises
    ------
    ValueError
        Offload together with a device map; offload or a device map with a loaded model or a
        hub id; an unknown ``device_map``; ``max_memory`` without a named ``device_map``;
        ``device`` with a ``device_map``; and every pre-flight failure of streaming.
    FileNotFoundError
        A model path that does not exist.
    """
    if isinstance(max_memory, str):
        max_memory = parse_max_memory(max_memory)
    _check_placement(offload, device_map, max_memory, device)
    if isinstance(model, BlockSource) and not isinstance(model, nn.Module):
        if offload is True or device_map is not None:
            raise ValueError("a block source is open already: its placement is its own (drop offload / device_map)")
        return model  # opened once, read by several steps (each table of a comparison)
    if isinstance(model, nn.Module):
        if offload is True or device_map is not None:
            raise ValueError(f"{'offload' if offload is True else 'device_map'} loads the weights itself from a "
                             "checkpoint folder: pass the model's folder, not a loaded model")
        return InMemorySource(model, device=device, config=config)
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(f"model must be a loaded causal LM, a local folder or a hub id, got {type(model).__name__}")
    folder = local_dir(model)
    gguf = find_gguf(model) if folder is not None else None
    if gguf is not None:  # one file of quantised blocks: loaded whole, dequantised (offload="auto" means no)
        check_gguf_placement(gguf, offload=offload, device_map=device_map)
        loaded = load_model(gguf, device=device, dtype=dtype)
        return InMemorySource(loaded, device=device, config=config if config is not None else loaded.config)
    if folder is None and (offload is True or device_map is not None):
        raise ValueError(f"{'offload' if offload is True else 'device_map'} needs a local checkpoint folder, got hub "
                         f"id {model!r}; download it first (huggingface-cli download {model} --local-dir DIR)")
    if config is None:
        config = load_config(folder or model, trust_remote_code=trust_remote_code)
    check_causal_lm(config, os.fspath(model), trust_remote_code=trust_remote_code)
    if device_map is not None:
        return DeviceMapSource.load(folder, device_map=device_map, dtype=dtype, max_memory=max_memory,
                                    offload_folder=offload_folder, attn_implementation=attn_implementation,
                                    trust_remote_code=trust_remote_code, config=config)
    if offload == "auto":
        offload = folder is not None and resolve_offload("auto", folder, config=config, device=device, dtype=dtype,
                                                         n_samples=n_samples, seq_len=seq_len)
    if offload:
        return prepare_offload(folder, config=config, n_samples=n_samples, seq_len=seq_len, device=device, dtype=dtype,
                               batch_size=batch_size, window_bytes=window_bytes,
                               attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
    loaded = load_in_memory(folder or model, config, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                            attn_implementation=attn_implementation)
    return InMemorySource(loaded, device=device, config=config)


def _check_placement(offload, device_map, max_memory, device) -> None:
    """Refuse option combinations that contradict each other, before anything is read."""
    if not (isinstance(offload, bool) or offload == "auto"):
        raise ValueError(f"offload must be True, False or 'auto', got {offload!r}")
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        raise ValueError(f"device_map must be one of {', '.join(DEVICE_MAPS)} or a dict of module -> device, "
                         f"got {device_map!r}")
    if device_map is not None and not isinstance(device_map, (str, dict)):
        raise ValueError(f"device_map must be one of {', '.join(DEVICE_MAPS)} or a dict of module -> device, "
                         f"got {type(device_map).__name__}")
    if offload is True and device_map is not None:
        raise ValueError("offload and device_map both decide where the weights live: drop one (offload / --offload "
                         "streams one block at a time from the shards; device_map / --device-map spreads the whole "
                         "model over the devices)")
    if device is not None and device_map is not None:
        raise ValueError("device_map places every module itself: drop device (--device), or drop device_map")
    if max_memory is not None and not isinstance(device_map, str):
        raise ValueError("max_memory budgets a named device_map ('auto', 'balanced', 'sequential'): add one "
                         "(--device-map auto), or drop max_memory")
    if max_memory is not None and not isinstance(max_memory, dict):
        raise ValueError(f"max_memory must be a dict such as {{0: '20GiB', 'cpu': '60GiB'}} or a string "
                         f"'0=20GiB,cpu=60GiB', got {type(max_memory).__name__}")
