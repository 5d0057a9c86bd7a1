"""Hidden states of a checkpoint too large for memory: one block's weights at a time.

The model is built on the meta device from its config (parameters take no memory; buffers
that are computed rather than stored, such as rotary frequencies, are built for real).
Only what runs before block 0 (the embedding and the like) is read from the safetensors
shards, to capture every block's inputs (:mod:`miprun.blockrun`); it is then freed. Each block is then materialised from
the shards (reading only its tensors), run over all calibration batches, and freed. Peak
memory is one block + the calibration activations + the score window, whatever the depth.

:func:`iter_hidden_states_offload` yields the same ``(b, h_b)`` sequence as
:func:`miprun.layerwise.iter_hidden_states` on the loaded model.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from miprun.hidden.capture import capture_block_args, run_block
from miprun.models.checkpoint import SAFETENSORS_DTYPES, Checkpoint
from miprun.hidden.memory import check_dtype_runs, check_fits, estimate_offload, release_host_memory, should_offload
from miprun.models.blocks import find_blocks

__all__ = ["StreamPlan", "prepare_offload", "iter_hidden_states_offload", "build_meta_model", "resolve_offload"]


def build_meta_model(config, dtype: torch.dtype, attn_implementation: str | None = None) -> nn.Module:
    """A causal LM whose parameters live on the meta device (no memory); buffers are real.

    Buffers are left real (on the CPU) because the ones a checkpoint does not store are
    computed at construction (rotary ``inv_freq``, Gemma's ``embed_scale``) and are tiny;
    re-deriving them later would need per-architecture code.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    return model.eval()


def _checkpoint_key(model_key: str, checkpoint: Checkpoint, base_prefix: str) -> str | None:
    """The checkpoint name of a model state-dict key (base-model checkpoints lack the wrapper prefix)."""
    if model_key in checkpoint.tensors:
        return model_key
    if base_prefix and model_key.startswith(base_prefix + "."):
        short = model_key[len(base_prefix) + 1:]
        if short in checkpoint.tensors:
            return short
    return None


def _set_tensor(root: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace parameter or buffer ``name`` of ``root`` (a meta placeholder) by ``value``."""
    owner_name, _, attr = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(value, requires_grad=False)
    elif attr in owner._buffers:
        owner._buffers[attr] = value
    else:
        raise KeyError(f"{type(root).__name__} has no parameter or buffer {name!r}")


def _to_meta(root: nn.Module, names) -> None:
    """Free the named tensors by putting meta placeholders of the same shape back."""
    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = root.get_submodule(owner_name) if owner_name else root
        old = owner._parameters.get(attr)
        if old is not None:
            owner._parameters[attr] = nn.Parameter(torch.empty_like(old, device="meta"), requires_grad=False)
        elif owner._buffers.get(attr) is not None:
            owner._buffers[attr] = torch.empty_like(owner._buffers[attr], device="meta")


@dataclass
class StreamPlan:
    """A checked streaming run: what to read for the head and for each block.

    Built by :func:`prepare_offload`, which runs every pre-flight check; nothing here has
    read a weight yet.
    """

    model_dir: Path
    checkpoint: Checkpoint
    config: object
    model: nn.Module
    blocks: nn.ModuleList
    block_path: str
    device: torch.device
    dtype: torch.dtype
    head_keys: dict[str, str] = field(default_factory=dict)  # model key -> checkpoint key
    block_keys: list[dict[str, str]] = field(default_factory=list)  # per block: block-relative key -> checkpoint key
    estimate: object = None

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _resolve_dtype(dtype, config, checkpoint: Checkpoint) -> torch.dtype:
    if dtype is None or dtype == "auto":
        dtype = getattr(config, "dtype", None) or checkpoint.floating_dtype() or torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        dtype = resolved
    return dtype


def prepare_offload(model_dir, *, n_samples: int, seq_len: int, device=None, dtype=None, batch_size: int = 8,
                    window_bytes: int = 0, attn_implementation: str | None = None,
                    available_bytes: int | None = None) -> StreamPlan:
    """Run every pre-flight check of a streaming run and return its plan.

    Checks, in this order, each failing with a clear error before any weight is read: the
    checkpoint folder and its shards exist and their headers list every tensor the index
    names; the device can run ``dtype``; every tensor of every block (and of the embedding)
    is in the checkpoint; one block plus the activations and the score window fit in the
    free memory of ``device``.

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

    Raises
    ------
    FileNotFoundError
        Missing folder, config, or shard file.
    ValueError
        Damaged index, missing tensors, unsupported architecture or dtype (``PreflightError``),
        not enough memory (``PreflightError``).
    """
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} has no config.json; expected a Hugging Face model folder")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    checkpoint = Checkpoint(model_dir)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    device = _resolve_device(device)
    dtype = _resolve_dtype(dtype, config, checkpoint)
    check_dtype_runs(device, dtype)

    model = build_meta_model(config, dtype, attn_implementation)
    blocks, path = find_blocks(model)
    base_prefix = getattr(model, "base_model_prefix", "")
    prefix = path + "."
    output = model.get_output_embeddings()
    skip = {id(p) for p in output.parameters()} if output is not None else set()
    input_params = {id(p) for p in model.get_input_embeddings().parameters()}

    head_keys: dict[str, str] = {}
    missing: list[str] = []
    seen: set[int] = set()  # a tied tensor appears under two names; it is read once
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name.startswith(prefix) or (id(tensor) in skip and id(tensor) not in input_params) or id(tensor) in seen:
            continue
        if not isinstance(tensor, nn.Parameter) and not tensor.is_meta:
            continue  # a computed buffer, already real
        seen.add(id(tensor))
        key = _checkpoint_key(name, checkpoint, base_prefix)
        if key is None:
            missing.append(name)
        else:
            head_keys[name] = key
    block_keys: list[dict[str, str]] = []
    for i, block in enumerate(blocks):
        keys = {}
        for rel in block.state_dict().keys():
            key = _checkpoint_key(f"{prefix}{i}.{rel}", checkpoint, base_prefix)
            if key is None:
                missing.append(f"{prefix}{i}.{rel}")
            else:
                keys[rel] = key
        block_keys.append(keys)
    if missing:
        raise ValueError(
            f"checkpoint {model_dir} lacks {len(missing)} tensor(s) the model needs, e.g. {missing[:4]}; "
            "the download is incomplete or the checkpoint does not match its config.json")

    estimate = estimate_offload(checkpoint, config, block_names=[list(k.values()) for k in block_keys],
                                head_names=list(head_keys.values()), n_samples=n_samples, seq_len=seq_len,
                                batch_size=batch_size, dtype=dtype, window_bytes=window_bytes)
    check_fits(estimate, device, available=available_bytes)
    return StreamPlan(model_dir, checkpoint, config, model, blocks, path, device, dtype, head_keys, block_keys,
                      estimate)


def _load_into(root: nn.Module, keys: dict[str, str], checkpoint: Checkpoint, device, dtype) -> None:
    """Read the named tensors from the shards and place them in ``root``, floats cast to ``dtype``."""
    tensors = checkpoint.load(keys.values())
    for name, key in keys.items():
        t = tensors.pop(key)
        stored = SAFETENSORS_DTYPES.get(checkpoint.tensors[key].dtype)
        target = dtype if stored is not None and stored.is_floating_point else t.dtype
        _set_tensor(root, name, t.to(device=device, dtype=target))


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


def iter_hidden_states_offload(model_dir, input_ids: torch.Tensor, *, device=None, dtype=None, batch_size: int = 8,
                               progress: bool = True, window_bytes: int = 0,
                               attn_implementation: str | None = None,
                               timings: dict | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(b, h_b)`` for ``b = 0..T`` from a checkpoint folder, one block in memory at a time.

    Every pre-flight check (:func:`prepare_offload`) runs when this function is called,
    before the first state is computed, so a run that cannot work fails at once.

    Parameters
    ----------
    model_dir : path
        Hugging Face checkpoint folder with safetensors weights (one file or sharded).
    input_ids : LongTensor, shape (n_samples, seq_len)
        Calibration tokens.
    device : str or torch.device, optional
        Compute device (default: CUDA when available, else CPU).
    dtype : torch.dtype or str, optional
        Compute dtype (default: the checkpoint's).
    batch_size : int
        Samples per forward call of a block.
    progress : bool
        Show a progress bar over the blocks.
    window_bytes : int
        Bytes the consumer keeps for its score window (for the memory check only).
    attn_implementation : str, optional
        Attention implementation for the blocks (default: as ``from_pretrained`` would choose).
    timings : dict, optional
        Filled with ``{"head_s", "load_s", "compute_s", "blocks"}`` as the run proceeds.

    Yields
    ------
    b : int
        State index, 0..T.
    h_b : Tensor, shape (n_samples, seq_len, d)
        ``h_0`` is block 0's input, ``h_{i+1}`` block ``i``'s output; ``h_T`` is before
        the final norm. On ``device``, in ``dtype``.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.numel() == 0:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a non-empty (n_samples, seq_len) tensor of token ids, got {shape}")
    plan = prepare_offload(model_dir, n_samples=input_ids.shape[0], seq_len=input_ids.shape[1], device=device,
                           dtype=dtype, batch_size=batch_size, window_bytes=window_bytes,
                           attn_implementation=attn_implementation)
    return _stream(plan, input_ids.long(), batch_size, progress, timings if timings is not None else {})


def _stream(plan: StreamPlan, input_ids: torch.Tensor, batch_size: int, progress: bool,
            timings: dict) -> Iterator[tuple[int, torch.Tensor]]:
    from tqdm.auto import tqdm

    device, dtype, model, blocks = plan.device, plan.dtype, plan.model, plan.blocks
    timings.update(head_s=0.0, load_s=0.0, compute_s=0.0, blocks=0)
    t0 = time.perf_counter()
    # Computed buffers were built on the CPU; they are tiny, so all go to the device.
    for name, buf in list(model.named_buffers()):
        if not buf.is_meta and buf.device != device:
            _set_tensor(model, name, buf.to(device))
    with torch.no_grad():
        _load_into(model, plan.head_keys, plan.checkpoint, device, dtype)
        h, calls = capture_block_args(model, blocks, input_ids, batch_size, device)
    _to_meta(model, plan.head_keys)
    _free(device)
    timings["head_s"] = time.perf_counter() - t0
    yield 0, h

    bar = tqdm(total=plan.num_blocks, desc="blocks (streamed)", unit="block", disable=not progress)
    try:
        for i, block in enumerate(blocks):
            t1 = time.perf_counter()
            _load_into(block, plan.block_keys[i], plan.checkpoint, device, dtype)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t2 = time.perf_counter()
            with torch.no_grad():
                out = run_block(block, h, calls[i])
            calls[i] = []
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t3 = time.perf_counter()
            _to_meta(block, plan.block_keys[i])
            del h
            h = out
            _free(device)
            timings["load_s"] += t2 - t1
            timings["compute_s"] += t3 - t2
            timings["blocks"] += 1
            bar.update(1)
            yield i + 1, h
    finally:
        bar.close()


def resolve_offload(offload, model, *, device=None, dtype=None, n_samples: int = 128, seq_len: int = 2048,
                    available_bytes: int | None = None) -> bool:
    """Turn ``offload`` (True, False or ``"auto"``) into a decision.

    ``"auto"`` streams when ``model`` is a local safetensors checkpoint folder whose weights
    (in the compute dtype) plus two hidden states ``(n_samples, seq_len, d)`` would not fit
    in the free memory of ``device`` (see :func:`miprun.memory.should_offload`); a loaded
    model or a hub id is never streamed.

    Parameters
    ----------
    offload : bool or "auto"
    model : loaded model, str or path
    device, dtype
        Compute device and dtype (defaults as in :func:`iter_hidden_states_offload`).
    n_samples, seq_len : int
        Calibration shape.
    available_bytes : int, optional
        Free memory to plan against (default: measured on ``device``).
    """
    if isinstance(offload, bool):
        return offload
    if offload != "auto":
        raise ValueError(f"offload must be True, False or 'auto', got {offload!r}")
    if not isinstance(model, (str, Path)) or not (Path(model) / "config.json").exists():
        return False
    from transformers import AutoConfig

    folder = Path(model)
    try:
        checkpoint = Checkpoint(folder)
    except FileNotFoundError:
        return False  # not a safetensors checkpoint: it can only be loaded whole
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    dtype = _resolve_dtype(dtype, config, checkpoint)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 0)
    states = 2 * n_samples * seq_len * hidden * dtype.itemsize
    return should_offload(checkpoint, _resolve_device(device), dtype, activation_bytes=states,
                          available=available_bytes)
