"""Block weights placed by an accelerate device map: a model spread over several devices.

For models that fit across several GPUs (or GPUs plus CPU/disk offload), the model is
loaded with ``from_pretrained(device_map=...)``; accelerate's hooks keep each block's
weights where the map puts them (and page in offloaded ones for their turn). The runner
moves the hidden state, and the blocks' extra arguments (masks, rotary tables), to each
block's execution device when it changes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoModelForCausalLM

from miprun.models.blocks import find_blocks
from miprun.models.gguf import check_placement as check_gguf_placement, find_gguf
from miprun.models.integrity import check_checkpoint, check_loading_info
from miprun.models.loading import load_config, local_dir, resolve_dtype

__all__ = ["DEVICE_MAPS", "DeviceMapSource", "execution_device", "load_with_device_map"]

#: The device-map strategies accepted by name (accelerate's; "auto" is "balanced").
DEVICE_MAPS = ("auto", "balanced", "sequential")


def load_with_device_map(model_dir, *, device_map="auto", dtype=None, max_memory: dict | None = None,
                         offload_folder=None, attn_implementation: str | None = None,
                         trust_remote_code: bool = False, config=None) -> nn.Module:
    """Load a causal LM across devices with accelerate's device map.

    Parameters
    ----------
    model_dir : path or str
        Checkpoint folder.
    device_map : "auto", "balanced", "sequential" or dict
        As ``from_pretrained``: module name -> device (``0``, ``"cuda:1"``, ``"cpu"``, ``"disk"``).
    dtype : torch.dtype or str, optional
        Default: the checkpoint's.
    max_memory : dict, optional
        Device -> budget (e.g. ``{0: "70GiB", "cpu": "200GiB"}``) for a named strategy.
    offload_folder : path, optional
        Where blocks mapped to ``"disk"`` are kept.
    attn_implementation : str, optional
        Default: transformers' choice.
    trust_remote_code : bool
        Allow the checkpoint's own code (off by default).
    config : transformers.PretrainedConfig, optional
        The model's config when already read.

    Raises
    ------
    ValueError
        A checkpoint that is damaged or does not hold the weights its config describes
        (:mod:`miprun.models.integrity`), checked before and after transformers loads it.
    """
    gguf = find_gguf(model_dir)
    if gguf is not None:
        check_gguf_placement(gguf, device_map=device_map)
    if config is None:
        config = load_config(model_dir, trust_remote_code=trust_remote_code)
    folder = local_dir(model_dir)
    check_checkpoint(folder, config, trust_remote_code=trust_remote_code)
    kwargs = {"device_map": device_map, "dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code,
              "config": config, "output_loading_info": True, "ignore_mismatched_sizes": True}
    optional = {"max_memory": max_memory, "attn_implementation": attn_implementation,
                "offload_folder": None if offload_folder is None else str(Path(offload_folder))}
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    try:
        model, info = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except SafetensorError as exc:  # a damaged file in the Hub cache (local folders are checked above)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"the weights of {model_dir} are truncated or corrupt ({first}): re-download them") from None
    check_loading_info(info, folder or model_dir, type(model).__name__)
    return model.eval()


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device, else its first real parameter's."""
    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", ())]:
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    for p in module.parameters():
        if not p.is_meta:
            return p.device
    return torch.device("cpu")


class DeviceMapSource:
    """A :class:`~miprun.hidden.sources.BlockSource` over a model dispatched with a device map.

    Parameters
    ----------
    model : transformers PreTrainedModel
        Loaded with a device map (:func:`load_with_device_map`), or on one device.
    config : transformers.PretrainedConfig, optional
        Default: ``model.config``.
    offload_dir : tempfile.TemporaryDirectory, optional
        A temporary offload folder to keep alive (and remove) with the source.
    """

    kind = "device_map"
    description = "blocks (device map)"
    #: The checkpoint is rewritten from its shards (a heal's maps folded as they are written).
    holds_model = False
    streams_weights = False

    def __init__(self, model: nn.Module, *, config=None, offload_dir: tempfile.TemporaryDirectory | None = None):
        self.model = model
        self.config = model.config if config is None else config
        self.blocks = find_blocks(model)[0]
        self._devices = [execution_device(b) for b in self.blocks]
        self.input_device = execution_device(model.get_input_embeddings())
        self.device = self._devices[0]  # where h_0 and the captured arguments go
        self._offload_dir = offload_dir

    @classmethod
    def load(cls, model_dir, *, device_map="auto", dtype=None, max_memory: dict | None = None, offload_folder=None,
             attn_implementation: str | None = None, trust_remote_code: bool = False, config=None):
        """Load with :func:`load_with_device_map`; blocks mapped to disk go to a temporary folder by default."""
        tmp = tempfile.TemporaryDirectory(prefix="miprun-offload-") if offload_folder is None else None
        model = load_with_device_map(model_dir, device_map=device_map, dtype=dtype, max_memory=max_memory,
                                     offload_folder=offload_folder if tmp is None else tmp.name,
                                     attn_implementation=attn_implementation, trust_remote_code=trust_remote_code,
                                     config=config)
        return cls(model, config=config, offload_dir=tmp)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def enter_capture(self) -> None:
        self.model.eval()

    def leave_capture(self) -> None:
        pass

    def block_device(self, i: int) -> torch.device:
        return self._devices[i]

    def enter_block(self, i: int) -> None:
        pass  # accelerate's hooks page offloaded weights in for the block's forward

    def leave_block(self, i: int) -> None:
        pass

    def enter_tail(self) -> torch.device:
        """accelerate's hooks move the state to the final norm's and the LM head's devices."""
        self.model.eval()
        return self.input_device

    def leave_tail(self) -> None:
        pass

    def close(self) -> None:
        pass
