"""Loading a causal LM and its tokenizer from a local folder or a Hugging Face Hub name, with clear errors.

A checkpoint's own Python code never runs unless ``trust_remote_code=True`` is asked for.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from miprun.models.blocks import find_blocks, num_blocks_of, text_config
from miprun.models.families import family_of

__all__ = ["resolve_dtype", "local_dir", "load_config", "check_causal_lm", "num_blocks_of", "text_config",
           "ModelInfo", "inspect_model", "load_model", "load_tokenizer"]

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
# A hub id is "name" or "owner/name" made of these characters; anything else is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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

    Raises ``FileNotFoundError`` for a path (absolute, relative with a folder part, or
    ``~``) that does not exist, and ``ValueError`` for a file that is not a folder.
    """
    s = os.fspath(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"model {s} is a file; give the folder that holds config.json and the weights")
        return p.resolve()
    if _HUB_ID.match(s) and not s.startswith((".", "~")):
        return None
    raise FileNotFoundError(f"model folder {s} does not exist")


def load_config(name_or_path, *, trust_remote_code: bool = False):
    """The model's config (cheap: no weights), with errors that say what is wrong."""
    from transformers import AutoConfig
    folder = local_dir(name_or_path)
    if folder is not None and not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: it is not a Hugging Face model folder")
    try:
        return AutoConfig.from_pretrained(os.fspath(folder or name_or_path), trust_remote_code=trust_remote_code)
    except OSError as exc:
        if folder is None:
            raise FileNotFoundError(f"model {name_or_path} is not a local folder and could not be loaded from the "
                                    f"Hugging Face Hub: {_first_line(exc)}") from None
        raise ValueError(f"cannot read the config of {folder}: {_first_line(exc)}") from None
    except ValueError as exc:
        raise ValueError(_remote_code_hint(name_or_path, exc, trust_remote_code)) from None


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
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
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
        A local model folder or a Hugging Face Hub id.
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
    from transformers import AutoModelForCausalLM
    config = load_config(name_or_path, trust_remote_code=trust_remote_code)
    check_causal_lm(config, str(name_or_path), trust_remote_code=trust_remote_code)
    folder = local_dir(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(os.fspath(folder or name_or_path), dtype=resolve_dtype(dtype),
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ValueError(_remote_code_hint(name_or_path, exc, trust_remote_code)) from None
    if device is not None:
        model.to(torch.device(device))
    return model.eval()


def load_tokenizer(name_or_path, *, trust_remote_code: bool = False):
    """Load the tokenizer saved with a model (local folder or hub id)."""
    from transformers import AutoTokenizer
    folder = local_dir(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(os.fspath(folder or name_or_path), trust_remote_code=trust_remote_code)
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
    """

    name: str
    folder: Path | None
    config: Any
    num_blocks: int


def inspect_model(model, *, trust_remote_code: bool = False, require_family: bool = True) -> ModelInfo:
    """Check a model (loaded, or a folder / hub id: then only its config is read) and describe it.

    Raises ``FileNotFoundError`` / ``ValueError`` for a missing folder, a folder that is not a
    model, a model that is not a causal LM, fewer than 2 blocks, and (with
    ``require_family``) an architecture whose blocks :mod:`miprun.surgery` cannot remove.
    """
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        folder = local_dir(model)
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
    return ModelInfo(name=name, folder=folder, config=config, num_blocks=total)
