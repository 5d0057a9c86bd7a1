"""Where and how the model runs over the calibration tokens, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from miprun.hidden.sources import DEVICE_MAPS
from miprun.util.options import Options, check_int

__all__ = ["ExecutionOptions", "DTYPE_NAMES"]

DTYPE_NAMES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


@dataclass(frozen=True)
class ExecutionOptions(Options):
    """How the model runs.

    Attributes
    ----------
    batch_size : int
        Calibration windows per forward call.
    device : str or None
        Compute device; None: where a loaded model's embeddings are, else CPU.
    dtype : str or None
        dtype a model given by name loads in (``auto`` / None: the checkpoint's).
    offload : bool or "auto"
        Stream the weights one block at a time from the checkpoint's shards.
    device_map : str, dict or None
        Spread the model over devices with accelerate (``auto``, ``balanced``, ``sequential``).
    max_memory : dict or None
        Per-device memory limits for ``device_map``, e.g. ``{0: "20GiB", "cpu": "60GiB"}``.
    trust_remote_code : bool
        Allow a checkpoint's own code to run (off by default).
    """

    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    offload: bool | str = False
    device_map: str | dict | None = None
    max_memory: dict | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, low=1)
        if self.device is not None and not isinstance(self.device, str):
            object.__setattr__(self, "device", str(self.device))  # torch.device -> its name, for the report
        if self.dtype is not None and not isinstance(self.dtype, str):
            object.__setattr__(self, "dtype", str(self.dtype).replace("torch.", ""))
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {self.dtype!r}")
        if not (isinstance(self.offload, bool) or self.offload == "auto"):  # 1 == True: refuse numbers by type
            raise ValueError(f"offload must be True, False or 'auto', got {self.offload!r}")
        if isinstance(self.device_map, str) and self.device_map not in DEVICE_MAPS:
            raise ValueError(f"device_map must be one of {DEVICE_MAPS} or a dict, got {self.device_map!r}")
        if self.device_map is not None and self.offload is True:
            raise ValueError("offload and device_map are two ways to run a model larger than one device: "
                             "give one of them (--offload or --device-map)")
        if isinstance(self.max_memory, dict):  # JSON turns GPU indices into strings; accelerate wants ints
            object.__setattr__(self, "max_memory", {int(k) if str(k).isdigit() else k: v
                                                    for k, v in self.max_memory.items()})
        if self.device_map is not None and self.device is not None:
            raise ValueError("a device map places every module itself: give device_map (--device-map) or device "
                             "(--device), not both")
        if self.max_memory is not None and not isinstance(self.device_map, str):
            raise ValueError("max_memory is the budget of a named device map: give device_map='auto', 'balanced' or "
                             "'sequential' (--device-map) with it")
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(f"trust_remote_code must be True or False, got {self.trust_remote_code!r}")

    @property
    def load_dtype(self) -> Any:
        """The dtype for loading: None for the checkpoint's own."""
        return None if self.dtype in (None, "auto") else self.dtype
