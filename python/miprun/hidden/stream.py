"""Block weights streamed from a checkpoint too large for memory: one block's weights at a time.

The model is built on the meta device from its config (:mod:`miprun.hidden.meta`). Only
what runs before block 0 (the embedding and the like) is read from the safetensors shards
for the capture of every block's inputs; it is then freed. Each block is then read from the
shards (only its tensors), run over all calibration batches, and freed. Peak memory is one
block + the calibration activations + the score window, whatever the depth.

:func:`prepare_offload` runs every pre-flight check and returns a :class:`StreamedSource`;
:func:`miprun.hidden.runner.iter_hidden_states` runs it.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch
from torch import nn

from miprun.hidden.memory import check_dtype_runs, check_fits, estimate_offload, release_host_memory, should_offload
from miprun.hidden.meta import build_meta_model, checkpoint_key, load_into, set_tensor, to_meta
from miprun.models.blocks import find_blocks, text_config
from miprun.models.checkpoint import Checkpoint
from miprun.models.integrity import check_model_tensors, model_keys
from miprun.models.loading import load_config, resolve_dtype
from miprun.util.devices import resolve_device

__all__ = ["StreamedSource", "prepare_offload", "resolve_offload"]


def _stream_device(device) -> torch.device:
    """The compute device with its index (memory is measured on one GPU); default CUDA when available, else CPU."""
    device = resolve_device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _resolve_dtype(dtype, config, checkpoint: Checkpoint) -> torch.dtype:
    """The compute dtype: the one asked for, else the config's, else the checkpoint's stored one."""
    dtype = resolve_dtype(dtype)
    if dtype == "auto":
        dtype = getattr(config, "dtype", None) or checkpoint.floating_dtype() or torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        dtype = resolved
    return dtype


def _free(device: torch.device) -> None:
    """Return a freed block's memory to the system.

    Its tensors are freed by reference counting as soon as the block is reset to meta, but
    the allocators keep the memory: glibc's heaps on the host (trimmed here, or host memory
    grows with depth), and the caching allocator on CUDA (emptied, after a cycle
    collection in case a module kept a reference cycle).
    """
    release_host_memory()
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StreamedSource:
    """A :class:`~miprun.hidden.sources.BlockSource` reading each block from the shards for its turn.

    Built by :func:`prepare_offload`, which has run every pre-flight check; nothing here has
    read a weight yet. A run leaves every parameter on the meta device again, so the same
    source can run twice.

    Attributes
    ----------
    head_keys : dict
        Model key -> checkpoint key of everything read before block 0.
    block_keys : list of dict
        Per block: block-relative key -> checkpoint key.
    estimate : OffloadEstimate
        The planned peak memory.
    timings : dict
        ``{"head_s", "load_s", "compute_s", "blocks"}`` of the last run, filled as it proceeds.
    """

    kind = "streamed"
    description = "blocks (streamed)"
    #: Nothing is held whole: the checkpoint is rewritten from its shards.
    holds_model = False
    streams_weights = True

    def __init__(self, model_dir: Path, checkpoint: Checkpoint, config, model: nn.Module, device: torch.device,
                 dtype: torch.dtype, head_keys: dict[str, str], block_keys: list[dict[str, str]], estimate,
                 tail_keys: dict[str, str] | None = None):
        self.model_dir, self.checkpoint, self.config, self.model = model_dir, checkpoint, config, model
        self.blocks, self.block_path = find_blocks(model)
        self.device = self.input_device = device
        self.dtype, self.head_keys, self.block_keys, self.estimate = dtype, head_keys, block_keys, estimate
        # the output head's own tensors (an untied LM head) and the names that share an input tensor
        self.tail_keys, self.tail_tied = _tail_keys(model, checkpoint) if tail_keys is None else (tail_keys, {})
        self.timings: dict = {}
        self._t = 0.0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def enter_capture(self) -> None:
        self.timings.update(head_s=0.0, load_s=0.0, compute_s=0.0, blocks=0)
        self._t = time.perf_counter()
        # Computed buffers were built on the CPU; they are tiny, so all go to the device.
        for name, buf in list(self.model.named_buffers()):
            if not buf.is_meta and buf.device != self.device:
                set_tensor(self.model, name, buf.to(self.device))
        load_into(self.model, self.head_keys, self.checkpoint, self.device, self.dtype)

    def leave_capture(self) -> None:
        to_meta(self.model, self.head_keys)
        _free(self.device)
        self.timings["head_s"] = time.perf_counter() - self._t

    def block_device(self, i: int) -> torch.device:
        return self.device

    def enter_block(self, i: int) -> None:
        self._t = time.perf_counter()
        load_into(self.blocks[i], self.block_keys[i], self.checkpoint, self.device, self.dtype)
        _sync(self.device)
        now = time.perf_counter()
        self.timings["load_s"] += now - self._t
        self._t = now

    def leave_block(self, i: int) -> None:
        _sync(self.device)
        self.timings["compute_s"] += time.perf_counter() - self._t
        self.timings["blocks"] += 1
        to_meta(self.blocks[i], self.block_keys[i])
        _free(self.device)

    def enter_tail(self) -> torch.device:
        """Read what runs before and after the blocks (embedding, final norm, LM head) from the shards."""
        for name, buf in list(self.model.named_buffers()):
            if not buf.is_meta and buf.device != self.device:
                set_tensor(self.model, name, buf.to(self.device))
        load_into(self.model, self.head_keys, self.checkpoint, self.device, self.dtype)
        load_into(self.model, self.tail_keys, self.checkpoint, self.device, self.dtype)
        for name, shared in self.tail_tied.items():  # a tied LM head reads the embedding's tensor
            set_tensor(self.model, name, self.model.get_parameter(shared))
        return self.device

    def leave_tail(self) -> None:
        to_meta(self.model, [*self.head_keys, *self.tail_keys, *self.tail_tied])
        _free(self.device)

    def close(self) -> None:
        pass


def _tail_keys(model: nn.Module, checkpoint: Checkpoint) -> tuple[dict[str, str], dict[str, str]]:
    """The output head's parameters that the head keys leave out: ``(model key -> checkpoint key, tied name ->
    the input parameter's name)``. A head whose tensor the checkpoint does not store is tied by its config."""
    output = model.get_output_embeddings()
    if output is None:
        return {}, {}
    names = {id(module): name for name, module in model.named_modules()}
    prefix = names[id(output)]
    inputs = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)
              if not name.startswith(prefix + ".")}
    embedding = model.get_input_embeddings()
    base_prefix = getattr(model, "base_model_prefix", "")
    # names stored otherwise than the module path (GPT-NeoX's embed_out is its lm_head), mapped as transformers maps them
    renamed = model_keys(checkpoint.tensors, model, model.state_dict(keep_vars=True))[0]
    own, tied = {}, {}
    for rel, param in output.named_parameters():
        name = f"{prefix}.{rel}"
        key = checkpoint_key(name, checkpoint, base_prefix) or renamed.get(name)
        if id(param) in inputs:
            tied[name] = inputs[id(param)]
        elif key is not None:
            own[name] = key
        elif hasattr(embedding, rel):  # not stored: tied to the input embedding (tie_word_embeddings), tied on load
            tied[name] = f"{names[id(embedding)]}.{rel}"
        else:
            raise ValueError(f"checkpoint {checkpoint.model_dir} has no tensor for the LM head's {name}")
    return own, tied


def _head_keys(model: nn.Module, prefix: str, checkpoint: Checkpoint, missing: list[str]) -> dict[str, str]:
    """Model key -> checkpoint key of every stored tensor outside the blocks, except the output head."""
    base_prefix = getattr(model, "base_model_prefix", "")
    output = model.get_output_embeddings()
    skip = {id(p) for p in output.parameters()} if output is not None else set()
    input_params = {id(p) for p in model.get_input_embeddings().parameters()}
    keys: dict[str, str] = {}
    seen: set[int] = set()  # a tied tensor appears under two names; it is read once
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name.startswith(prefix) or (id(tensor) in skip and id(tensor) not in input_params) or id(tensor) in seen:
            continue
        if not isinstance(tensor, nn.Parameter) and not tensor.is_meta:
            continue  # a computed buffer, already real
        seen.add(id(tensor))
        key = checkpoint_key(name, checkpoint, base_prefix)
        if key is None:
            missing.append(name)
        else:
            keys[name] = key
    return keys


def _block_keys(model: nn.Module, blocks: nn.ModuleList, prefix: str, checkpoint: Checkpoint,
                missing: list[str]) -> list[dict[str, str]]:
    """Per block: block-relative key -> checkpoint key."""
    base_prefix = getattr(model, "base_model_prefix", "")
    out = []
    for i, block in enumerate(blocks):
        keys = {}
        for rel in block.state_dict():
            key = checkpoint_key(f"{prefix}{i}.{rel}", checkpoint, base_prefix)
            if key is None:
                missing.append(f"{prefix}{i}.{rel}")
            else:
                keys[rel] = key
        out.append(keys)
    return out


def prepare_offload(model_dir, *, n_samples: int, seq_len: int, device=None, dtype=None, batch_size: int = 8,
                    window_bytes: int = 0, attn_implementation: str | None = None,
                    available_bytes: int | None = None, config=None,
                    trust_remote_code: bool = False) -> StreamedSource:
    """Run every pre-flight check of a streaming run and return its source.

    Checks, in this order, each failing with a clear error before any weight is read: the
    checkpoint folder and its shards exist, are whole and agree with the index
    (:class:`~miprun.models.checkpoint.Checkpoint`); the device can run ``dtype``; the
    checkpoint holds exactly the tensors of the model its config describes, in their shapes
    (:func:`miprun.models.integrity.check_model_tensors`); one block plus the activations
    and the score window fit in the free memory of ``device``.

    Parameters
    ----------
    model_dir : path
        Hugging Face checkpoint folder (``config.json`` + safetensors, one file or sharded).
    n_samples, seq_len : int
        Calibration shape.
    device : str or torch.device, optional
        Compute device (default: CUDA when available, else CPU).
    dtype : torch.dtype or str, optional
        Compute dtype (default: the checkpoint's, ``config.dtype``).
    batch_size : int
        Samples per forward call of a block.
    window_bytes : int
        Bytes the scorer keeps for its window, included in the memory check.
    attn_implementation : str, optional
        Passed to the model constructor (default: transformers' choice, as ``from_pretrained``).
    available_bytes : int, optional
        Free memory to plan against (default: measured on ``device``).
    config : transformers.PretrainedConfig, optional
        The model's config when already read (default: read from ``model_dir``).
    trust_remote_code : bool
        Allow the checkpoint's own code to build the model (off by default).

    Raises
    ------
    FileNotFoundError
        Missing folder, config, or shard file.
    ValueError
        Truncated or damaged files or index, missing, unexpected or misshapen tensors,
        unsupported architecture or dtype (``PreflightError``), not enough memory
        (``PreflightError``).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} has no config.json; expected a Hugging Face model folder")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    checkpoint = Checkpoint(model_dir)
    if config is None:
        config = load_config(model_dir, trust_remote_code=trust_remote_code)
    device = _stream_device(device)
    dtype = _resolve_dtype(dtype, config, checkpoint)
    check_dtype_runs(device, dtype)

    model = build_meta_model(config, dtype, attn_implementation, trust_remote_code=trust_remote_code)
    check_model_tensors(checkpoint, model)  # every tensor present, none left over, every shape as config.json says
    blocks, path = find_blocks(model)
    missing: list[str] = []
    head_keys = _head_keys(model, path + ".", checkpoint, missing)
    block_keys = _block_keys(model, blocks, path + ".", checkpoint, missing)
    if missing:  # present under a legacy name transformers renames when it loads; streaming reads by name
        raise ValueError(
            f"checkpoint {model_dir} stores {len(missing)} tensor(s) under names other than the model's, e.g. "
            f"{missing[:4]}, which only loading the whole model renames; drop offload (--offload), or re-save the "
            f"model with save_pretrained")

    estimate = estimate_offload(checkpoint, text_config(config), block_names=[list(k.values()) for k in block_keys],
                                head_names=list(head_keys.values()), n_samples=n_samples, seq_len=seq_len,
                                batch_size=batch_size, dtype=dtype, window_bytes=window_bytes)
    check_fits(estimate, device, available=available_bytes)
    return StreamedSource(model_dir, checkpoint, config, model, device, dtype, head_keys, block_keys, estimate)


def resolve_offload(offload, model, *, device=None, dtype=None, n_samples: int = 128, seq_len: int = 2048,
                    available_bytes: int | None = None, config=None, trust_remote_code: bool = False) -> bool:
    """Turn ``offload`` (True, False or ``"auto"``) into a decision.

    ``"auto"`` streams when ``model`` is a local safetensors checkpoint folder whose weights
    (in the compute dtype) plus two hidden states ``(n_samples, seq_len, d)`` would not fit
    in the free memory of ``device`` (see :func:`miprun.hidden.memory.should_offload`); a
    loaded model or a hub id is never streamed.

    Parameters
    ----------
    offload : bool or "auto"
    model : loaded model, str or path
    device, dtype
        Compute device and dtype (defaults as in :func:`prepare_offload`).
    n_samples, seq_len : int
        Calibration shape.
    available_bytes : int, optional
        Free memory to plan against (default: measured on ``device``).
    config : transformers.PretrainedConfig, optional
        The model's config when already read (default: read from the folder).
    trust_remote_code : bool
        Passed on when the config must be read.
    """
    if isinstance(offload, bool):
        return offload
    if offload != "auto":
        raise ValueError(f"offload must be True, False or 'auto', got {offload!r}")
    if not isinstance(model, (str, Path)) or not (Path(model) / "config.json").exists():
        return False
    folder = Path(model)
    try:
        checkpoint = Checkpoint(folder)
    except FileNotFoundError:
        return False  # not a safetensors checkpoint: it can only be loaded whole
    if config is None:
        config = load_config(folder, trust_remote_code=trust_remote_code)
    dtype = _resolve_dtype(dtype, config, checkpoint)
    text = text_config(config)
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 0)
    states = 2 * n_samples * seq_len * hidden * dtype.itemsize
    return should_offload(checkpoint, _stream_device(device), dtype, activation_bytes=states,
                          available=available_bytes)
