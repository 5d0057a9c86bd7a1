"""Block weights from a model already in memory: the plain case of the hidden-state runner.

Blocks held on another device than the compute device (e.g. a model on the CPU scored on a
GPU) are moved there for their turn and back, so only one block at a time takes compute
memory beyond the embedding.
"""

from __future__ import annotations

import os

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoModelForCausalLM

from miprun.models.blocks import find_blocks
from miprun.models.integrity import check_checkpoint, check_loading_info
from miprun.models.loading import local_dir, resolve_dtype

__all__ = ["InMemorySource", "compute_device", "load_in_memory"]


def compute_device(model: nn.Module, device=None) -> torch.device:
    """``device`` if given, else the device of the model's input embedding weights."""
    if device is not None:
        return torch.device(device)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


def load_in_memory(name_or_path, config, *, device=None, dtype=None, trust_remote_code: bool = False,
                   attn_implementation: str | None = None) -> nn.Module:
    """Load a whole causal LM with an already-read ``config`` (the config is not read again).

    Parameters
    ----------
    name_or_path : str or Path
        Local folder or hub id.
    config : transformers.PretrainedConfig
    device : str or torch.device, optional
        Where to put the model (default: where ``from_pretrained`` puts it, the CPU).
    dtype : str or torch.dtype, optional
        ``"auto"``/None (the checkpoint's), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    trust_remote_code : bool
        Allow the checkpoint's own code.
    attn_implementation : str, optional
        Default: transformers' choice.

    Raises
    ------
    ValueError
        A checkpoint that is damaged or does not hold the weights ``config`` describes
        (:mod:`miprun.models.integrity`), checked before and after transformers loads it:
        no weight is ever left randomly initialised.
    """
    folder = local_dir(name_or_path)
    check_checkpoint(folder, config, trust_remote_code=trust_remote_code)
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    try:
        # ignore_mismatched_sizes: wrong shapes come back in the loading report, to be named below
        model, info = AutoModelForCausalLM.from_pretrained(
            os.fspath(name_or_path), config=config, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code,
            output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot load model {name_or_path}: {first}") from None
    check_loading_info(info, folder or name_or_path, type(model).__name__)
    if device is not None:
        model.to(torch.device(device))
    return model.eval()


class InMemorySource:
    """A :class:`~miprun.hidden.sources.BlockSource` over a loaded model.

    Parameters
    ----------
    model : transformers PreTrainedModel
        A causal LM in memory (any device).
    device : torch.device or str, optional
        Where blocks run and states live; default the device of the input embeddings.
    blocks : nn.ModuleList, optional
        The decoder blocks the model's forward calls, in order (default: :func:`find_blocks`).
    config : transformers.PretrainedConfig, optional
        Default: ``model.config``.
    """

    kind = "in_memory"
    description = "blocks"
    #: The caller keeps the loaded model: blocks are removed and heals folded in place.
    holds_model = True
    streams_weights = False

    def __init__(self, model: nn.Module, *, device=None, blocks: nn.ModuleList | None = None, config=None):
        self.model = model
        self.blocks = find_blocks(model)[0] if blocks is None else blocks
        self.config = getattr(model, "config", None) if config is None else config
        self.device = compute_device(model, device)
        self.input_device = compute_device(model, None)
        self._was_training: bool | None = None
        self._block_home: torch.device | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def enter_capture(self) -> None:
        # dropout must be off while the states are computed; the caller's mode comes back at close
        if self._was_training is None:
            self._was_training = self.model.training
        self.model.eval()

    def leave_capture(self) -> None:
        pass

    def block_device(self, i: int) -> torch.device:
        return self.device

    def enter_block(self, i: int) -> None:
        first = next(self.blocks[i].parameters(), None)
        home = first.device if first is not None else self.device
        if home != self.device:
            self.blocks[i].to(self.device)
            self._block_home = home

    def leave_block(self, i: int) -> None:
        if self._block_home is not None:
            self.blocks[i].to(self._block_home)
            self._block_home = None

    def enter_tail(self) -> torch.device:
        """Everything outside the blocks stays where it is: the tail runs where the input embedding lives."""
        self.enter_capture()
        return self.input_device

    def leave_tail(self) -> None:
        pass

    def close(self) -> None:
        if self._was_training is not None:
            self.model.train(self._was_training)
            self._was_training = None
