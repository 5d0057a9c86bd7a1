"""The measured criteria, token by token: next-token loss, and KL divergence from the unpruned model.

For each window every token but the first is predicted from the ones before it. Per token,
``nll = -log q(t)`` of the plan's distribution ``q`` at the true next token ``t``, and
``kl = sum_v p(v) (log p(v) - log q(v))`` with ``p`` the unpruned model's distribution at the
same position. Log-probabilities are taken in at least float32 and the sums kept in
float64; no logits outlive the rows they were computed for.
"""

from __future__ import annotations

import torch

__all__ = ["log_probs", "token_sums"]


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` of the predicting positions (all but the last), in at least float32: ``(rows, seq_len - 1, V)``."""
    pred = logits[:, :-1]
    return torch.log_softmax(pred.to(torch.promote_types(pred.dtype, torch.float32)), dim=-1)


def token_sums(logp: torch.Tensor, dense_logp: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``[sum of nll, sum of kl]`` over every predicted token of the rows, float64 on the CPU.

    Parameters
    ----------
    logp, dense_logp : Tensor (rows, seq_len - 1, V)
        :func:`log_probs` of the plan and of the unpruned model at the same windows.
    input_ids : LongTensor (rows, seq_len)
    """
    targets = input_ids[:, 1:].to(logp.device).unsqueeze(-1)
    nll = -logp.gather(-1, targets).sum(dtype=torch.float64)
    dense_logp = dense_logp.to(logp.device)
    kl = (dense_logp.exp() * (dense_logp - logp)).sum(dtype=torch.float64)
    return torch.stack([nll, kl]).cpu()
