"""Blocks swapped for pass-throughs: the model ``remove_blocks`` makes, without its surgery.

A :class:`BypassedBlock` returns the hidden states it is given; :class:`bypassed` swaps a
model's blocks for them for the duration of a ``with`` and puts them back, also on error.
The kept blocks keep their own attention type (``layer_types``), masks and rotary tables,
and with ``use_cache=False`` their ``layer_idx`` is read by nothing that the renumbering
would change (GPT-2's ``scale_attn_by_inverse_layer_idx`` is what surgery refolds, and here
the kept blocks keep their index).
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from miprun.models.blocks import find_blocks

__all__ = ["BypassedBlock", "bypassed"]


class BypassedBlock(nn.Module):
    """A decoder block that returns the hidden states it is given, however it is called.

    transformers 5.x calls a decoder block with the hidden states first (positionally, or
    as ``hidden_states=``) and other arguments after, and reads a tensor back.
    """

    def forward(self, *args, **kwargs):
        if args:
            return args[0]
        if "hidden_states" in kwargs:
            return kwargs["hidden_states"]
        raise TypeError(f"a bypassed block was called without hidden states (keywords {sorted(kwargs)})")


class bypassed:
    """Context manager: the blocks ``removed`` of ``model`` are :class:`BypassedBlock` inside it.

    ``blocks`` (default: :func:`~miprun.models.blocks.find_blocks`) is the block list the
    model's forward calls, for a skeleton whose blocks were found already.
    """

    def __init__(self, model: nn.Module, removed: Iterable[int], *, blocks: nn.ModuleList | None = None,
                 allow_all: bool = False):
        self.blocks = find_blocks(model)[0] if blocks is None else blocks
        self.removed = sorted({int(b) for b in removed})
        bad = [b for b in self.removed if not 0 <= b < len(self.blocks)]
        if bad:
            raise ValueError(f"blocks {bad} are outside 0..{len(self.blocks) - 1}: the model has "
                             f"{len(self.blocks)} blocks")
        if len(self.removed) >= len(self.blocks) and not allow_all:
            raise ValueError(f"cannot bypass {len(self.removed)} of {len(self.blocks)} blocks: at least one must stay")
        self.saved: dict[int, nn.Module] = {}

    def __enter__(self) -> "bypassed":
        try:
            for b in self.removed:
                self.saved[b] = self.blocks[b]
                self.blocks[b] = BypassedBlock()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for b, block in self.saved.items():
            self.blocks[b] = block
        self.saved.clear()
