"""Next-token logits from the states after the last block, as the model's own forward makes them.

Whatever a family does after its blocks (a final norm, OPT's projection out, the LM head,
Gemma 2's logit soft-capping) is done by the model's own forward, with its block list
swapped for the duration: block 0 returns the given final states and the others pass their
input through. Only the embedding of the token ids is computed for nothing; no per-family
code is needed and the logits are exactly the model's.
"""

from __future__ import annotations

import torch
from torch import nn

from miprun.hidden.bypass import bypassed

__all__ = ["Tail"]


class _Inject(nn.Module):
    """Stands for block 0: returns ``state`` (the batch's final hidden states) whatever it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.state: torch.Tensor | None = None

    def forward(self, *args, **kwargs):
        return self.state


class Tail:
    """Context manager over a block source: :meth:`logits` of final states, blocks swapped while inside.

    Parameters
    ----------
    source : BlockSource
        Its ``enter_tail`` makes the embedding, final norm and LM head ready; on leaving,
        the blocks are put back and ``leave_tail`` releases them.
    """

    def __init__(self, source):
        self.source = source
        self._inject = _Inject()
        self._device: torch.device | None = None
        self._swapped: bypassed | None = None

    def __enter__(self) -> "Tail":
        self._device = self.source.enter_tail()
        blocks = self.source.blocks
        self._swapped = bypassed(self.source.model, range(len(blocks)), blocks=blocks, allow_all=True)
        self._swapped.__enter__()
        blocks[0] = self._inject  # put back with the others on leaving
        return self

    def __exit__(self, *exc) -> None:
        self._swapped.__exit__(*exc)
        self._inject.state = None
        self.source.leave_tail()

    def logits(self, input_ids: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Logits ``(rows, seq_len, vocab)`` of the windows ``input_ids`` whose last block put out ``states``."""
        self._inject.state = states if self._device is None else states.to(self._device)
        try:
            with torch.inference_mode():
                out = self.source.model(input_ids=input_ids.to(self.source.input_device), use_cache=False)
        finally:
            self._inject.state = None
        return out.logits
