"""The measurer: a batch of candidate plans in, each one's mean next-token loss and KL divergence out.

Every call measures the candidates it has not measured yet on the same windows, in as few
sweeps as the state budget allows (:mod:`miprun.measure.sweep`); the unpruned model is
measured in every sweep. Results are cached, so a plan measured by verify is not measured
again by refine or by the plan check. With data parallelism each process measures its share
of the windows and the sums are all-reduced once per call, so every process gets the same
values (and makes the same choices).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from miprun.hidden.memory import available_bytes
from miprun.hidden.runner import as_source, check_batch_size, check_input_ids
from miprun.measure.candidates import Candidate, as_candidates, dense
from miprun.measure.sweep import sweep_candidates
from miprun.models.blocks import text_config
from miprun.models.families import family_of

__all__ = ["CRITERIA", "Measurement", "Measurer", "window_share"]

#: ``kl``: mean KL divergence of the plan's next-token distribution from the unpruned model's;
#: ``loss``: the plan's mean next-token cross-entropy on the windows' own tokens.
CRITERIA = ("kl", "loss")
#: Share of the free memory of the compute device the states of a sweep may take by default.
BUDGET_FRACTION = 0.3


@dataclass(frozen=True)
class Measurement:
    """One candidate measured on a set of windows (means per predicted token, in nats)."""

    loss: float
    kl: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if math.isfinite(self.loss) and self.loss < 709.0 else math.inf

    def value(self, criterion: str) -> float:
        """The criterion's value (lower is better): ``loss`` or ``kl``."""
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        return self.loss if criterion == "loss" else self.kl


def window_share(n: int, rank: int, world_size: int) -> slice:
    """Rows ``[rank n / W, (rank + 1) n / W)`` of ``n`` windows: contiguous shares differing by at most one
    (a process may get none when there are fewer windows than processes)."""
    return slice(rank * n // world_size, (rank + 1) * n // world_size)


class Measurer:
    """Measure candidate plans of one model on fixed windows, in sweeps over its blocks.

    Parameters
    ----------
    source : BlockSource or loaded model
        Where the blocks' weights come from (in memory, streamed, device map).
    input_ids : LongTensor (n, seq_len)
        Every window measured (the same on every process; each measures its share).
    batch_size : int
        Windows per block call.
    screen : int
        Windows (the first ``screen``) a screening measurement (``screen=True``) uses; 0: all.
    budget_bytes : int, optional
        Most bytes of hidden states a sweep holds (default :data:`BUDGET_FRACTION` of the
        free memory of the compute device); past it, sweeps split by windows, then by
        candidates.
    data_parallel : DataParallel, optional
        ``rank``, ``world_size`` and ``reducer`` of a ``torchrun`` run.
    progress : bool
        A progress bar per sweep.

    Attributes
    ----------
    sweeps : int
        Sweeps run (each reads every block's weights once).
    measured : int
        Candidate measurements made (repeats served from the cache are not counted).
    block_runs, naive_block_runs : int
        Blocks run over the windows, and what one forward pass per candidate would have run.
    seconds : float
    """

    def __init__(self, source, input_ids: torch.Tensor, *, batch_size: int = 8, screen: int = 0,
                 budget_bytes: int | None = None, data_parallel=None, progress: bool = False):
        check_input_ids(input_ids)
        check_batch_size(batch_size)
        if input_ids.shape[1] < 2:
            raise ValueError(f"measured windows need at least 2 tokens, got seq_len {input_ids.shape[1]}")
        self.source = as_source(source)
        self.num_blocks = self.source.num_blocks
        self.input_ids, self.batch_size, self.progress = input_ids, batch_size, progress
        if isinstance(screen, bool) or not isinstance(screen, int) or screen < 0:
            raise ValueError(f"screen must be a number of windows >= 0, got {screen!r}")
        n = int(input_ids.shape[0])
        self.screen = min(screen, n) if screen else n
        dp = data_parallel
        self.rank, self.world_size = (0, 1) if dp is None else (dp.rank, dp.world_size)
        self.reducer = None if dp is None or dp.world_size <= 1 else dp.reducer
        self._rows = {False: self._share(n), True: self._share(self.screen)}
        self.budget = int(budget_bytes) if budget_bytes is not None else \
            int(BUDGET_FRACTION * available_bytes(self.source.device))
        config = text_config(self.source.config)
        self._row_bytes = int(input_ids.shape[1]) * int(getattr(config, "hidden_size", 0) or config.n_embd) * \
            _state_dtype(self.source).itemsize
        self._logit_row_bytes = int(input_ids.shape[1]) * int(config.vocab_size) * 4 * 4
        heal = family_of(config).heal
        self._site = None if heal is None else heal.output
        self.cache: dict[tuple[Candidate, bool], Measurement] = {}
        self.sweeps = self.measured = self.block_runs = self.naive_block_runs = 0
        self.seconds = 0.0

    def _share(self, n: int) -> torch.Tensor:
        return self.input_ids[:n][window_share(n, self.rank, self.world_size)]

    def windows(self, screen: bool = False) -> int:
        """How many windows a measurement uses (all processes together)."""
        return self.screen if screen else int(self.input_ids.shape[0])

    def measure(self, plans: Iterable, *, screen: bool = False) -> list[Measurement]:
        """Each plan's measurement, in order.

        Parameters
        ----------
        plans : iterable of block sets or :class:`Candidate`
            ``()`` is the unpruned model; repeats are measured once.
        screen : bool
            Measure on the first ``screen`` windows only (cheaper, noisier).
        """
        wanted = as_candidates(plans)
        for c in wanted:
            bad = [b for b in c.removed if not 0 <= b < self.num_blocks]
            if bad or len(c.removed) >= self.num_blocks:
                raise ValueError(f"plan {list(c.removed)} does not fit a model of {self.num_blocks} blocks: "
                                 f"blocks 0..{self.num_blocks - 1}, at least one kept")
        todo = [c for c in dict.fromkeys(wanted) if (c, screen) not in self.cache]
        if todo or (dense(), screen) not in self.cache:
            self._run([c for c in todo if c != dense()], screen)
        return [self.cache[(c, screen)] for c in wanted]

    def __call__(self, plans: Iterable, *, screen: bool = False, criterion: str = "kl") -> list[float]:
        """The criterion's value of each plan (lower is better)."""
        return [m.value(criterion) for m in self.measure(plans, screen=screen)]

    def _run(self, todo: list[Candidate], screen: bool) -> None:
        t = time.perf_counter()
        ids = self._rows[screen]
        everyone = [dense(), *todo]
        local = {c: torch.zeros(3, dtype=torch.float64) for c in everyone}
        if ids.shape[0]:
            for g, (group, rows) in enumerate(self._split(todo, int(ids.shape[0]))):
                for lo in range(0, int(ids.shape[0]), rows):
                    result = sweep_candidates(self.source, ids[lo:lo + rows], group, batch_size=self.batch_size,
                                              site=self._site, tail_rows=self._tail_rows(), progress=self.progress)
                    self.sweeps += 1
                    self.block_runs += result.block_runs
                    self.naive_block_runs += sum(self.num_blocks - len(c.removed) for c in [dense(), *group])
                    for c, s in result.sums.items():
                        if g and c == dense():
                            continue  # every group measures the unpruned model again: count it once
                        local[c][:2] += s
                        local[c][2] += result.tokens
        stacked = torch.stack([local[c] for c in everyone])  # (candidates, [nll, kl, tokens])
        if self.reducer is not None:
            stacked = self.reducer.all_reduce_sum(stacked)
        for c, (nll, kl, tokens) in zip(everyone, stacked.tolist()):
            self.cache[(c, screen)] = Measurement(loss=nll / tokens, kl=kl / tokens, tokens=int(tokens))
        self.measured += len(todo)
        self.seconds += time.perf_counter() - t

    def _split(self, todo: Sequence[Candidate], rows: int) -> list[tuple[list[Candidate], int]]:
        """Candidate groups and windows per sweep so that a sweep's states fit the budget.

        A sweep holds one state per candidate (and the unpruned model's) at the end, plus
        the one being computed. Windows split first (the same work, more weight reads);
        candidates only when one window of every state does not fit.
        """
        states = len(todo) + 2
        per_sweep = self.budget // (states * self._row_bytes)
        if per_sweep >= 1:
            return [(list(todo), min(rows, per_sweep))]
        size = self.budget // self._row_bytes - 2
        if size < 1:
            raise ValueError(f"the measurement budget of {self.budget:,} bytes holds fewer than 3 hidden states of "
                             f"one window ({self._row_bytes:,} bytes each); raise it or measure shorter windows")
        ordered = sorted(todo, key=lambda c: (c.removed, c.heal))  # neighbours share the longest prefixes
        return [(ordered[i:i + size], 1) for i in range(0, len(ordered), size)]

    def _tail_rows(self) -> int:
        return max(1, (self.budget // 4) // self._logit_row_bytes)

    def summary(self) -> dict:
        """What the measurements cost, for the report."""
        return {"windows": int(self.input_ids.shape[0]), "screen_windows": self.screen,
                "seq_len": int(self.input_ids.shape[1]), "sweeps": self.sweeps, "measured": self.measured,
                "block_runs": self.block_runs, "naive_block_runs": self.naive_block_runs,
                "seconds": self.seconds, "budget_bytes": self.budget}


def _state_dtype(source) -> torch.dtype:
    """The dtype the blocks put out: the streamed compute dtype, else the first floating parameter's."""
    dtype = getattr(source, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    for p in source.model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
