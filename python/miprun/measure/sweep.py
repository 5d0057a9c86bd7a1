"""One sweep over the blocks measuring many candidates, with a hidden state per distinct prefix.

Candidates that do the same at blocks ``0..i`` (bypass the same ones, apply the same maps)
share one state there and every computation up to ``i``: at block ``i`` each distinct state
is run once, and a group whose candidates part ways there splits into the state passed
through (those that bypass ``i``), the block's output, and the output with a heal map on
the block's MLP output. Each block's weights are made ready once per sweep. After the last
block, the final state of every candidate and of the unpruned model goes through the
model's own tail, a few windows at a time, and the loss and KL sums are taken token by token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from miprun.hidden.runner import BlockTurn, Sweep
from miprun.measure.candidates import Candidate, dense
from miprun.measure.criteria import log_probs, token_sums
from miprun.measure.tail import Tail

__all__ = ["SweepResult", "sweep_candidates", "mapped_output"]


@dataclass
class SweepResult:
    """What one sweep measured.

    Attributes
    ----------
    sums : dict
        Candidate -> float64 ``[sum of nll, sum of kl]`` over this sweep's predicted tokens.
    tokens : int
        Predicted tokens per candidate (``rows * (seq_len - 1)``).
    block_runs : int
        Blocks run over the windows (a block run once per distinct state reaching it).
    """

    sums: dict
    tokens: int
    block_runs: int


def mapped_output(out: torch.Tensor, m: torch.Tensor, T: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A block's output ``a + m`` with its MLP output ``m`` mapped: ``a + m T`` (what a folded block computes).

    ``T``: ``(d, d)``, or ``(d,)`` channel factors; float64, a batch of windows at a time.
    """
    result = torch.empty_like(out)
    T = T.to(out.device)
    with torch.inference_mode():
        for lo in range(0, m.shape[0], batch_size):
            mm = m[lo:lo + batch_size].double()
            moved = mm * T if T.ndim == 1 else mm @ T
            result[lo:lo + batch_size] = (out[lo:lo + batch_size].double() - mm + moved).to(out.dtype)
    return result


def sweep_candidates(source, input_ids: torch.Tensor, candidates: Sequence[Candidate], *, batch_size: int,
                     site: str | None = None, tail_rows: int = 1, progress: bool = False) -> SweepResult:
    """Measure ``candidates`` and the unpruned model on the windows ``input_ids`` (n, seq_len) in one sweep.

    ``site`` is the dotted path, inside a block, of the module whose output a heal map maps
    (needed when a candidate carries maps); ``tail_rows`` the windows whose logits are taken
    at once.
    """
    wanted = list(dict.fromkeys([dense(), *candidates]))
    if site is None and any(c.maps for c in wanted):
        raise ValueError("candidates with heal maps need the family's heal site")
    with Sweep(source, input_ids, batch_size=batch_size, progress=progress, desc="measure") as sweep:
        groups: list[tuple[torch.Tensor, list[Candidate]]] = [(sweep.h0, wanted)]
        runs = 0
        for turn in sweep.blocks():
            groups, ran = _advance(turn, groups, site, batch_size)
            runs += ran
        finals = {members[0]: h for h, members in groups}
        sums = _tail_sums(sweep.source, input_ids, finals, tail_rows)
    return SweepResult(sums=sums, tokens=int(input_ids.shape[0]) * (int(input_ids.shape[1]) - 1), block_runs=runs)


def _advance(turn: BlockTurn, groups: list, site: str | None, batch_size: int) -> tuple[list, int]:
    """Every group through block ``turn.index``: split by what its candidates do there, each state run once.

    States that only run the block go through it together (:meth:`BlockTurn.run_many`, their
    windows packed into full batches), a few at a time: as many as fill one batch, so that
    no more than a batch's worth of extra states is alive at once.
    """
    i, out_groups, ran = turn.index, [], 0
    plain: list[tuple[torch.Tensor, list]] = []
    pack = max(1, -(-turn.batch_rows // max(1, int(groups[0][0].shape[0])))) if groups else 1
    while groups:
        h, members = groups.pop()
        by_step: dict = {}
        for c in members:
            by_step.setdefault(c.step(i), []).append(c)
        if ("x",) in by_step:
            out_groups.append((h, by_step.pop(("x",))))
        if not by_step:
            continue
        ran += 1
        if list(by_step) == [None]:  # the block alone: packed with other states
            plain.append((h, by_step[None]))
            if len(plain) >= pack:
                out_groups += _run_plain(turn, plain)
            continue
        out, m = turn.run(h, capture=site)
        for s in [s for s in by_step if s is not None]:
            c = by_step[s][0]
            out_groups.append((mapped_output(out, m, c.maps[i], batch_size), by_step[s]))
        if None in by_step:
            out_groups.append((out, by_step[None]))
        del h, out, m
    return out_groups + _run_plain(turn, plain), ran


def _run_plain(turn: BlockTurn, plain: list) -> list:
    """The block over every state of ``plain`` (emptied), packed: the groups with their new states."""
    outs = turn.run_many([h for h, _ in plain])
    done = [(out, members) for out, (_, members) in zip(outs, plain)]
    plain.clear()
    return done


def _tail_sums(source, input_ids: torch.Tensor, finals: dict, tail_rows: int) -> dict:
    """Loss and KL sums of every candidate, ``tail_rows`` windows at a time (no logits kept beyond them)."""
    sums = {c: torch.zeros(2, dtype=torch.float64) for c in finals}
    base = dense()
    with Tail(source) as tail:
        for lo in range(0, int(input_ids.shape[0]), tail_rows):
            ids = input_ids[lo:lo + tail_rows]
            dense_logp = log_probs(tail.logits(ids, finals[base][lo:lo + tail_rows]))
            for c, h in finals.items():
                logp = dense_logp if c == base else log_probs(tail.logits(ids, h[lo:lo + tail_rows]))
                sums[c] += token_sums(logp, dense_logp, ids)
                del logp
            del dense_logp
    return sums
