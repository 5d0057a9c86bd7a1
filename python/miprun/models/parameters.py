"""How many parameters a model has, and how many a token uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["ParameterCount", "count_parameters"]


@dataclass
class ParameterCount:
    """Parameter counts of a model.

    Attributes
    ----------
    total : int
        Every distinct parameter tensor's elements (tied weights counted once).
    per_token : int
        Parameters a forward pass uses for one token: the total, except that an embedding
        table that is only looked up (not tied to an output projection) counts one row,
        ``embedding_dim``, instead of all of them. With tied input/output embeddings the table
        is used in full by the output head, so it counts in full.
    embedding_rows_unused : int
        ``total - per_token``.
    """

    total: int
    per_token: int
    embedding_rows_unused: int

    def to_dict(self) -> dict:
        return asdict(self)


def count_parameters(model) -> ParameterCount:
    """Count a model's parameters (see :class:`ParameterCount` for the definitions)."""
    seen: dict[int, torch.nn.Parameter] = {}
    for p in model.parameters():  # parameters() already yields a tied tensor once
        seen[id(p)] = p
    total = sum(p.numel() for p in seen.values())
    used_by_matmul = {id(m.weight) for m in model.modules()
                      if isinstance(m, torch.nn.Linear) and m.weight is not None}
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out_emb is not None and getattr(out_emb, "weight", None) is not None:
        used_by_matmul.add(id(out_emb.weight))
    unused = 0
    done: set[int] = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding) and id(m.weight) not in done:
            done.add(id(m.weight))
            if id(m.weight) not in used_by_matmul:
                unused += m.weight.numel() - m.embedding_dim
    return ParameterCount(total=total, per_token=total - unused, embedding_rows_unused=unused)
