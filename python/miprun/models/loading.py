"""Loading a causal LM and its tokenizer from a local folder or a Hugging Face Hub name, with clear errors.

A checkpoint's own Python code never runs unless ``trust_remote_code=True`` is asked for.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from huggingface_hub import constants
from huggingface_hub.utils import get_session
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from miprun.models.blocks import find_blocks, num_blocks_of, text_config
from miprun.models.families import family_of
from miprun.models.gguf import find_gguf, load_gguf_config, load_gguf_model, load_gguf_tokenizer
from miprun.models.integrity import check_checkpoint, check_gguf_file, check_loading_info

try:  # what huggingface_hub raises for a config whose values contradict each other
    from huggingface_hub.errors import StrictDataclassError as _CONFIG_INVALID
except ImportError:  # older huggingface_hub: configs are not validated
    _CONFIG_INVALID = ()

__all__ = ["resolve_dtype", "local_dir", "looks_like_path", "hub_unreachable", "HubUnavailableError", "load_config",
           "check_loading_info", "check_causal_lm", "num_blocks_of", "text_config",
           "ModelInfo", "inspect_model", "load_model", "load_tokenizer"]

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
# A hub id is "name" or "owner/name" made of these characters; anything else is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Names ending like a file are paths: no model repository is named "x.safetensors". Hub ids
# do end in ".5B" or ".1", so only these suffixes count.
_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".ggml", ".txt", ".model",
                  ".h5", ".msgpack", ".onnx", ".py", ".zip", ".tar", ".gz", ".tgz")
# Seconds to wait for the Hub before declaring it unreachable; huggingface_hub itself
# retries a failed connection for about 25 s before falling back to its cache.
HUB_PROBE_TIMEOUT = 3.0


def resolve_dtype(dtype):
    """``None`` / ``"auto"`` -> ``"auto"`` (the checkpoint's dtype); names such as ``"bf16"`` -> torch dtypes."""
    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")


def local_dir(name_or_path) -> Path | None:
    """The model folder when ``name_or_path`` is a local path; None when it is a hub id.

    For a GGUF file (``model.gguf``) it is the folder that holds the file.

    A name that exists on disk is a local path. A name that looks like a path and does not
    exist is an error, not a hub id to try: it starts with ``./``, ``../``, ``/`` or ``~``,
    its first folder exists here (``models/typo``), it ends with a file suffix, or it is
    not of the hub's ``name`` / ``owner/name`` form.

    Raises
    ------
    FileNotFoundError
        A path that does not exist.
    ValueError
        A file that is neither a folder nor a ``.gguf`` file.
    """
    s = os.fspath(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            if find_gguf(p) is not None:
                return p.resolve().parent
            raise ValueError(f"model {s} is a file; give the folder that holds config.json and the weights "
                             f"(or a .gguf file)")
        return p.resolve()
    if looks_like_path(s):
        raise FileNotFoundError(f"local path {s} does not exist; check the spelling (a Hugging Face Hub id is "
                                f"written owner/name)")
    return None


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub id (see :func:`local_dir`)."""
    if name in (".", "..") or name.startswith(("./", "../", "/", "~", ".\\", "..\\")):
        return True
    seps = [c for c in (os.sep, os.altsep) if c]
    if any(c in name for c in seps):
        first = re.split("|".join(map(re.escape, seps)), name)[0]
        if first and Path(first).is_dir():
            return True
    return name.lower().endswith(_FILE_SUFFIXES) or not _HUB_ID.match(name)


# ----------------------------------------------------------------------------- the Hub
@functools.lru_cache(maxsize=None)
def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached, or None when it can or ``HF_HUB_OFFLINE`` is set.

    Probed once per process with a short timeout, so that an offline machine fails in
    seconds instead of after huggingface_hub's own retries.
    """
    if constants.HF_HUB_OFFLINE:
        return None
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT)
    except Exception as exc:  # any transport error (DNS, refused, timeout, proxy) means unreachable
        return f"{constants.ENDPOINT} cannot be reached: {_first_line(exc)}"
    return None


def _hub_message(name, what: str, exc: Exception | None) -> str:
    """Why ``what`` for hub id ``name`` could not be had, and what to do."""
    reason = hub_unreachable()
    if reason is not None:
        return (f"{what} {name} is not a local folder, the Hugging Face Hub {reason}, and it is not in the local "
                f"cache; connect to the network, or give a local folder (HF_HUB_OFFLINE=1 skips the Hub and uses "
                f"only the cache)")
    if constants.HF_HUB_OFFLINE:
        return (f"{what} {name} is not a local folder and is not in the local cache, and HF_HUB_OFFLINE is set so "
                f"the Hugging Face Hub is not asked; give a local folder, or unset HF_HUB_OFFLINE to download it")
    return (f"{what} {name} is not a local folder and could not be loaded from the Hugging Face Hub: "
            f"{_first_line(exc) if exc else 'not found'}")


class HubUnavailableError(FileNotFoundError):
    """A hub id that is not cached while the Hub cannot be reached; the message says what to do."""


def _pretrained(loader, name_or_path, folder: Path | None, *, what: str = "model", **kwargs):
    """``loader(folder or name_or_path, **kwargs)``, from the local cache only when the Hub is unreachable.

    Raises ``HubUnavailableError`` when a hub id is neither reachable nor cached.
    """
    if folder is not None:
        return loader(os.fspath(folder), **kwargs)
    if hub_unreachable() is None:
        return loader(os.fspath(name_or_path), **kwargs)
    try:
        return loader(os.fspath(name_or_path), local_files_only=True, **kwargs)
    except OSError:
        raise HubUnavailableError(_hub_message(name_or_path, what, None)) from None


def load_config(name_or_path, *, trust_remote_code: bool = False):
    """The model's config (cheap: no weights), with errors that say what is wrong."""
    folder = local_dir(name_or_path)
    gguf = find_gguf(name_or_path) if folder is not None else None
    if gguf is not None:
        check_gguf_file(gguf)  # a truncated file is named as such, not by the metadata reader's failure
        return load_gguf_config(gguf)
    if folder is not None and not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: it is not a Hugging Face model folder (nor a folder "
                         f"holding one .gguf file)")
    try:
        return _pretrained(AutoConfig.from_pretrained, name_or_path, folder, trust_remote_code=trust_remote_code)
    except HubUnavailableError:
        raise
    except OSError as exc:
        if folder is None:
            raise FileNotFoundError(_hub_message(name_or_path, "model", exc)) from None
        raise ValueError(f"cannot read the config of {folder}: {_first_line(exc)}") from None
    except ValueError as exc:
        raise ValueError(_remote_code_hint(name_or_path, exc, trust_remote_code)) from None
    except _CONFIG_INVALID as exc:  # transformers 5 validates a config's sizes against each other
        reason = _first_line(exc.__cause__ or exc)
        raise ValueError(f"the config.json of {folder or name_or_path} is not valid: {reason}; fix config.json or "
                         f"re-download the model") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _remote_code_hint(name, exc: Exception, trust_remote_code: bool) -> str:
    msg = _first_line(exc)
    if "trust_remote_code" in str(exc) and not trust_remote_code:
        return (f"model {name} needs its own code to load; if you trust it, pass trust_remote_code=True "
                f"(--trust-remote-code)")
    return f"cannot load model {name}: {msg}"


def check_causal_lm(config, name="model", *, trust_remote_code: bool = False) -> None:
    """Raise ``ValueError`` unless ``AutoModelForCausalLM`` can build ``config``."""
    model_type = getattr(config, "model_type", None)
    auto_map = getattr(config, "auto_map", None) or {}
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return
    if trust_remote_code and "AutoModelForCausalLM" in auto_map:
        return
    arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    raise ValueError(f"{name} is a {arch} model (model_type {model_type!r}), not a causal language model that "
                     f"AutoModelForCausalLM can load; miprun prunes decoder-only causal LMs")


def load_model(name_or_path, *, device=None, dtype=None, trust_remote_code: bool = False):
    """Load a causal LM for scoring and pruning.

    Parameters
    ----------
    name_or_path : str or Path
        A local model folder, a Hugging Face Hub id, or a GGUF model (a ``.gguf`` file, or
        a folder holding one): loaded with every weight dequantised.
    device : str or torch.device, optional
        Where to put it; default CPU.
    dtype : str or torch.dtype, optional
        ``"auto"`` (default: the checkpoint's dtype), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    trust_remote_code : bool
        Allow the checkpoint's own Python code (off by default).

    Returns
    -------
    transformers.PreTrainedModel
        In eval mode.
    """
    config = load_config(name_or_path, trust_remote_code=trust_remote_code)
    check_causal_lm(config, str(name_or_path), trust_remote_code=trust_remote_code)
    folder = local_dir(name_or_path)
    gguf = find_gguf(name_or_path) if folder is not None else None
    check_checkpoint(folder, config, gguf_file=gguf, trust_remote_code=trust_remote_code)
    if gguf is not None:
        with _quiet_transformers():
            model, info = load_gguf_model(gguf, dtype=resolve_dtype(dtype), config=config, output_loading_info=True)
        check_loading_info(info, gguf, type(model).__name__)
        if device is not None:
            model.to(torch.device(device))
        return model
    try:
        with _quiet_transformers():
            # ignore_mismatched_sizes: wrong shapes come back in the loading info, to be named below
            model, info = _pretrained(AutoModelForCausalLM.from_pretrained, name_or_path, folder,
                                      dtype=resolve_dtype(dtype),
                                      trust_remote_code=trust_remote_code, output_loading_info=True,
                                      ignore_mismatched_sizes=True)
    except HubUnavailableError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(_remote_code_hint(name_or_path, exc, trust_remote_code)) from None
    except SafetensorError as exc:  # a damaged file in the Hub cache (local folders are checked above)
        raise ValueError(f"the weights of {name_or_path} are truncated or corrupt ({_first_line(exc)}): "
                         f"re-download or re-save them") from None
    check_loading_info(info, folder or name_or_path, type(model).__name__)
    if device is not None:
        model.to(torch.device(device))
    return model.eval()


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' loading-report table: :func:`check_loading_info` reports the same in one line."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_tokenizer(name_or_path, *, trust_remote_code: bool = False):
    """Load the tokenizer saved with a model (local folder or hub id), or the one a GGUF file carries."""
    folder = local_dir(name_or_path)
    try:
        gguf = find_gguf(name_or_path) if folder is not None else None
        if gguf is not None:
            return load_gguf_tokenizer(gguf)
        return _pretrained(AutoTokenizer.from_pretrained, name_or_path, folder, what="tokenizer",
                           trust_remote_code=trust_remote_code)
    except HubUnavailableError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot load a tokenizer from {name_or_path}: {_first_line(exc)}; give token ids "
                         f"instead, or a folder that holds tokenizer files") from None


@dataclass
class ModelInfo:
    """What is known about a model before its weights are loaded.

    Attributes
    ----------
    name : str
        The folder or hub id it came from (the class name for an in-memory model without one).
    folder : Path or None
        Its local folder, if any (never written to).
    config : transformers.PretrainedConfig
    num_blocks : int
        Decoder blocks ``T``.
    gguf_file : Path or None
        The GGUF file it is read from, when it is a GGUF model (then ``folder`` holds it).
    """

    name: str
    folder: Path | None
    config: Any
    num_blocks: int
    gguf_file: Path | None = None


def inspect_model(model, *, trust_remote_code: bool = False, require_family: bool = True) -> ModelInfo:
    """Check a model (loaded, or a folder / hub id: then only its config and file headers are read) and describe it.

    Raises ``FileNotFoundError`` / ``ValueError`` for a missing folder, a folder that is not a
    model, a model that is not a causal LM, fewer than 2 blocks, (with ``require_family``)
    an architecture whose blocks :mod:`miprun.output.surgery` cannot remove, and a local
    checkpoint whose files are damaged or do not hold the weights its config describes
    (:func:`miprun.models.integrity.check_checkpoint`; no weight is read).
    """
    gguf = None
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        folder = local_dir(model)
        gguf = find_gguf(model) if folder is not None else None
        config = load_config(model, trust_remote_code=trust_remote_code)
        check_causal_lm(config, name, trust_remote_code=trust_remote_code)
        total = num_blocks_of(config)
    else:
        config = getattr(model, "config", None)
        if config is None or not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a Hugging Face causal LM or a folder / hub id, got {type(model).__name__}")
        name = getattr(model, "name_or_path", None) or type(model).__name__
        folder = Path(name).expanduser().resolve() if Path(name).expanduser().is_dir() else None
        total = len(find_blocks(model)[0])
    if require_family:
        family_of(text_config(config))
    if total < 2:
        raise ValueError(f"the model has {total} block(s); scoring and pruning need at least 2")
    if isinstance(model, (str, os.PathLike)):
        check_checkpoint(folder, config, gguf_file=gguf, trust_remote_code=trust_remote_code)
    return ModelInfo(name=name, folder=folder, config=config, num_blocks=total, gguf_file=gguf)
