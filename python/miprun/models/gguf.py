"""GGUF models: find the file, read its config, load it dequantised, load the tokenizer it carries.

A GGUF file (llama.cpp's format) holds the weights, mostly as quantised blocks, the
hyper-parameters and the tokenizer in one file. transformers reads it
(``from_pretrained(folder, gguf_file=name)``) with the ``gguf`` package; miprun loads every
weight dequantised to a dense float tensor (``GgufConfig(dequantize=True)``), so that the
model scores, prunes and saves as any other. The model is given as the ``.gguf`` file, or
as a folder that holds exactly one ``.gguf`` file and no safetensors weights.

Weights cannot be streamed from a GGUF file nor placed by a device map (they are quantised
blocks in one file): :func:`check_placement` says so.

The per-layer attention kinds of a model whose blocks alternate between sliding-window and
full attention (Gemma 2 and 3) follow from the block index in transformers and llama.cpp;
a pruned file records the kinds its blocks kept in ``{arch}.attention.sliding_window_pattern``
(one bool per block, True for sliding), which :func:`load_gguf_config` reads back.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import os
import re
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig
from transformers.utils import logging as hf_logging

try:  # transformers' own metadata reader skips the vocabulary, so it reads a header in milliseconds
    from transformers.integrations.gguf import read_gguf_metadata
except ImportError:  # older transformers: the gguf package's reader (see _metadata)
    read_gguf_metadata = None

__all__ = ["GGUF_SUFFIX", "INSTALL_HINT", "find_gguf", "require_gguf", "check_placement", "gguf_metadata",
           "load_gguf_config", "load_gguf_model", "load_gguf_tokenizer", "pattern_key", "layer_types_of"]

GGUF_SUFFIX = ".gguf"
INSTALL_HINT = "pip install 'miprun[gguf]'"
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
SLIDING, FULL = "sliding_attention", "full_attention"


def require_gguf() -> None:
    """Raise ``ImportError`` saying how to install the ``gguf`` package when it is missing."""
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"reading and writing GGUF files needs the gguf package: {INSTALL_HINT} "
                          f"(or pip install 'gguf>=0.10')")


def find_gguf(name_or_path) -> Path | None:
    """The GGUF file ``name_or_path`` names, or None when it is not a GGUF model.

    A GGUF model is a ``.gguf`` file, or a folder holding exactly one ``.gguf`` file and no
    ``.safetensors`` file (a folder with safetensors weights is a Hugging Face checkpoint,
    whatever else it holds).

    Raises
    ------
    ValueError
        A folder with several ``.gguf`` files and no safetensors, or a split GGUF file.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        return None
    p = Path(os.fspath(name_or_path)).expanduser()
    if p.is_file():
        if p.suffix.lower() != GGUF_SUFFIX:
            return None
        if _SPLIT.search(p.name):
            raise ValueError(f"{p} is one part of a split GGUF model, which transformers cannot load; merge the "
                             f"parts first (llama-gguf-split --merge {p.name} merged.gguf) and give the merged file")
        return p.resolve()
    if not p.is_dir() or any(p.glob("*.safetensors")):
        return None
    files = sorted(f for f in p.iterdir() if f.suffix.lower() == GGUF_SUFFIX and f.is_file())
    if len(files) > 1:
        names = ", ".join(f.name for f in files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
        raise ValueError(f"{p} holds {len(files)} GGUF files ({names}); give the one to use as MODEL "
                         f"(e.g. {p / files[0].name})")
    return find_gguf(files[0]) if files else None


def check_placement(gguf_file, *, offload=False, device_map=None) -> None:
    """Refuse streaming (``offload=True``) and device maps for a GGUF model, saying what to do instead."""
    if offload is True:
        what = "--offload (offload=True)"
    elif device_map is not None:
        what = "--device-map (device_map)"
    else:
        return
    raise ValueError(f"{what} cannot be used with the GGUF model {gguf_file}: its weights are quantised blocks in "
                     f"one file, which miprun loads whole and dequantises; drop {what.split(' ')[0]} (the model "
                     f"needs about 4 bytes per parameter of memory), or convert it to a Hugging Face checkpoint "
                     f"first (miprun eval/prune write one) and stream that")


def _split(gguf_file) -> tuple[str, str]:
    p = Path(gguf_file)
    return os.fspath(p.parent), p.name


def _identity(gguf_file) -> tuple[str, int, int]:
    """What the caches below are keyed on: the file, its size and modification time."""
    p = Path(gguf_file).resolve()
    st = p.stat()
    return os.fspath(p), st.st_size, st.st_mtime_ns


def gguf_metadata(gguf_file) -> dict:
    """The file's metadata keys and values (string arrays such as the vocabulary as their length only)."""
    require_gguf()
    return dict(_metadata(*_identity(gguf_file)))


@functools.lru_cache(maxsize=8)
def _metadata(path: str, size: int, mtime_ns: int) -> dict:
    if read_gguf_metadata is not None:
        return read_gguf_metadata(path)[0]
    from gguf import GGUFReader, GGUFValueType  # optional dependency (the gguf extra)

    out = {}
    for key, field in GGUFReader(path).fields.items():
        if key.startswith("GGUF."):
            continue
        if field.types[:1] == [GGUFValueType.ARRAY] and field.types[-1] == GGUFValueType.STRING:
            out[key] = len(field.data)
        else:
            out[key] = field.contents()
    return out


def pattern_key(arch: str) -> str:
    """The metadata key of the per-block sliding-window pattern (llama.cpp's name)."""
    return f"{arch}.attention.sliding_window_pattern"


def load_gguf_config(gguf_file):
    """The transformers config of a GGUF model (cached per file; a fresh copy each call).

    A per-block ``{arch}.attention.sliding_window_pattern`` in the file sets ``layer_types``
    (transformers otherwise derives them from the block index).
    """
    require_gguf()
    return copy.deepcopy(_config(*_identity(gguf_file)))


@functools.lru_cache(maxsize=8)
def _config(path: str, size: int, mtime_ns: int):
    folder, name = _split(path)
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    except ImportError:
        raise
    except Exception as exc:  # a third-party reader's many errors (unknown architecture, bad values): one message
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot read the GGUF model {path}: {first}") from None
    metadata = _metadata(path, size, mtime_ns)
    pattern = metadata.get(pattern_key(metadata.get("general.architecture", "")))
    if isinstance(pattern, list) and getattr(config, "layer_types", None) is not None:
        if len(pattern) != config.num_hidden_layers:
            raise ValueError(f"{path}: {pattern_key(metadata['general.architecture'])} has {len(pattern)} entries "
                             f"for {config.num_hidden_layers} blocks")
        config.layer_types = [SLIDING if flag else FULL for flag in pattern]
    return config


def layer_types_of(config) -> list[str] | None:
    """The per-block attention kinds of a config (``layer_types``), when it has any."""
    types = getattr(config, "layer_types", None)
    return list(types) if types is not None else None


def load_gguf_model(gguf_file, *, dtype="auto", config=None, output_loading_info: bool = False):
    """Load a GGUF model through transformers with every weight dequantised.

    Parameters
    ----------
    gguf_file : path
        The ``.gguf`` file.
    dtype : str or torch.dtype
        ``"auto"`` (transformers' choice for the file: float32 for quantised weights) or a dtype.
    config : transformers.PretrainedConfig, optional
        Default :func:`load_gguf_config`.
    output_loading_info : bool
        Also return transformers' loading report (missing, unexpected and mismatched keys),
        as ``from_pretrained`` does.

    Returns
    -------
    transformers.PreTrainedModel
        A plain model (``nn.Linear`` weights, no quantiser attached), in eval mode, on the CPU;
        with ``output_loading_info``, ``(model, info)``.
    """
    require_gguf()
    folder, name = _split(gguf_file)
    config = load_gguf_config(gguf_file) if config is None else config
    try:
        with _quiet_dequantise():
            model, info = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, config=config, dtype=dtype, quantization_config=GgufConfig(dequantize=True),
                output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot load the GGUF model {gguf_file}: {first}") from None
    # Dequantised: nothing of the quantiser is left to act on, and save_pretrained must not record one.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for cfg in {id(c): c for c in (model.config, getattr(model.config, "get_text_config", lambda: None)())
                if c is not None}.values():
        if getattr(cfg, "quantization_config", None) is not None:
            del cfg.quantization_config
    return (model.eval(), info) if output_loading_info else model.eval()


@contextlib.contextmanager
def _quiet_dequantise():
    """Hide the progress bar of transformers' dequantising loader when its progress bars are off (--quiet).

    That loader draws its own ``tqdm`` bar, which ``disable_progress_bar`` does not reach.
    """
    try:
        module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:
        module = None
    bar = getattr(module, "tqdm", None)
    if bar is None or hf_logging.is_progress_bar_enabled():
        yield
        return
    module.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        module.tqdm = bar


def load_gguf_tokenizer(gguf_file):
    """The tokenizer a GGUF file carries (``tokenizer.ggml.*``), built by transformers."""
    require_gguf()
    folder, name = _split(gguf_file)
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)
