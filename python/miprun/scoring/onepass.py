"""The score table in one pass over the hidden states.

As each hidden state ``h_b`` appears, every run ending at ``b`` (``MI(h_a, h_b)`` for
``b - max_run <= a < b``) is scored against a window of the last ``max_run`` states, kept
on the states' device in compact form (:mod:`miprun.scoring.scorers`). One pass over the
blocks gives the whole table, and no hidden state goes to the host.

Data-parallel calibration: K processes holding contiguous shards of the calibration
samples pass a ``reducer`` (see :class:`miprun.scoring.distributed.Reducer`) and their
shard's ``token_offset``; edge rows and KSG subsamples are chosen by GLOBAL token index and
gathered, histogram counts and other sums are all-reduced, so each process gets the
single-process table (exactly for ``hist`` and ``ksg``; up to float summation order for
``gaussian``, ``cosine`` and ``angular``).

Companion tables: the same pass can also score the similarity baselines' tables (``cosine``
for ShortGPT, ``angular`` for Gromov et al.) and the pooled ``gaussian`` MI table next to the
main estimator's, each up to its own run length, from the states it already sees: a second
window keeps the states with their row norms (and, for ``gaussian``, their element sum and
sum of squares), and one sweep of row dot products per pair serves all three (``1 - mean
cos``, ``arccos(mean cos) / pi`` and the pooled correlation). ``verify`` reads them to add
those selectors' plans to its candidates without another forward pass.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch

from miprun.mi.binning import resolve_bins
from miprun.mi.scale import DISTANCE_ESTIMATORS
from miprun.scoring.distributed import LocalReducer, Reducer
from miprun.scoring.options import ScoringOptions
from miprun.scoring.scorers import CosineScorer, PooledGaussianCompanion, make_scorer
from miprun.scoring.table import ScoreTable
from miprun.util.options import check_int
from miprun.util.progress import progress_bar

__all__ = ["score_states", "COMPANION_ESTIMATORS"]

#: The tables a pass can score beside its main estimator's: the baselines' distances and the
#: pooled Gaussian MI, all from one sum of row dot products per pair.
COMPANION_ESTIMATORS = DISTANCE_ESTIMATORS + ("gaussian",)


def _token_rows(h: torch.Tensor, skip_first: int) -> torch.Tensor:
    """``h: (n_samples, seq_len, d)`` -> the scored token rows ``(n_samples * (seq_len - skip_first), d)``."""
    if h.ndim == 2:
        if skip_first:
            raise ValueError("skip_first needs states of shape (n_samples, seq_len, d), got a 2-D state")
        return h
    if h.ndim != 3:
        raise ValueError(f"hidden states must have shape (n_samples, seq_len, d), got {tuple(h.shape)}")
    if skip_first >= h.shape[1]:
        raise ValueError(f"skip_first={skip_first} leaves no tokens of a sequence of {h.shape[1]}; "
                         f"use skip_first < seq_len")
    return h[:, skip_first:, :].reshape(-1, h.shape[2])  # (n_samples * (seq_len - skip_first), d)


def score_states(states: Iterable[tuple[int, torch.Tensor]], num_blocks: int, options: ScoringOptions | None = None,
                 *, progress: bool = True, reducer: Reducer | None = None, token_offset: int = 0,
                 total_tokens: int | None = None, companions: Mapping[str, int] | None = None,
                 **scoring) -> ScoreTable:
    """Score every run of up to ``options.max_run`` blocks while the hidden states stream past.

    Parameters
    ----------
    states : iterable of (int, Tensor)
        ``(b, h_b)`` for ``b = 0..num_blocks`` in order (as
        :func:`miprun.hidden.runner.iter_hidden_states` yields them);
        ``h_b: (n_samples, seq_len, d)`` on any device, any float dtype.
    num_blocks : int
        ``T``, the number of blocks.
    options : ScoringOptions, optional
        The estimator and its settings; ``max_run`` must be set (``1..num_blocks``: the
        window holds this many states). Instead of ``options``, its fields may be given as
        keyword arguments (``estimator="ksg", max_run=3, ...``).
    progress : bool
        A tqdm bar over states (only when stderr is a terminal).
    reducer : Reducer, optional
        Data-parallel collectives; default :class:`LocalReducer` (one process).
    token_offset : int
        Global index of this process's first scored token row. Token rows are counted
        after ``skip_first``: sample ``i``'s position ``p`` is row
        ``i * (seq_len - skip_first) + p - skip_first``, samples in rank order.
    total_tokens : int, optional
        Scored token rows of all processes; checked against the all-reduced count.
    companions : mapping of str to int, optional
        Tables to score in the same pass, estimator (:data:`COMPANION_ESTIMATORS`:
        ``"cosine"``, ``"angular"``, ``"gaussian"``) -> longest run (``1..num_blocks``);
        e.g. ``{"cosine": 1, "angular": N, "gaussian": N}``, what the ShortGPT and Gromov
        baselines and Fast-Block-Select on Gaussian scores read to remove ``N`` blocks.
        Each equals the table that estimator (``gaussian``: with reduction ``pooled``) gives
        when scored alone with that ``max_run`` (``gaussian`` up to float64 rounding). A
        companion of the main estimator (and reduction) within ``max_run`` is read off the
        main table. Costs one sweep of row dot products per pair ``(a, b)`` with ``b - a``
        up to the longest companion run, and a window of that many states (the states
        themselves, in their dtype) on their device.

    Returns
    -------
    ScoreTable
        ``values[a, L-1] = score(h_a, h_{a+L})`` for ``L <= max_run``; NaN past the last
        block. ``settings`` records every option, the resolved bin count and token counts
        (and ``companions``: estimator -> run length, when asked for); ``companions``
        holds the companion tables.

    Notes
    -----
    With ``edge_tokens`` at least the token count, each entry equals
    ``mutual_information(h_a_rows, h_b_rows, ...)`` on the scored token rows (up to float
    summation order for ``gaussian``, ``cosine`` and ``angular``). The window holds uint8
    codes for ``hist``, subsamples for ``ksg``, and the states themselves (plus float64
    row or column statistics) for ``gaussian``, ``cosine`` and ``angular``.
    """
    if options is None:
        options = ScoringOptions(**scoring)
    elif scoring:
        options = options.replace(**scoring)
    check_int("num_blocks", num_blocks, low=1)
    if options.max_run is None or options.max_run > num_blocks:
        raise ValueError(f"max_run must be an int in 1..{num_blocks} (the number of blocks), got {options.max_run!r}")
    check_int("token_offset", token_offset, low=0)
    reducer = reducer if reducer is not None else LocalReducer()
    runs = _check_companions(companions, num_blocks)
    # a companion of the main estimator within max_run is a slice of the main table; the others are scored
    side = _Companions({name: run for name, run in runs.items() if not read_off_main(name, run, options)},
                       num_blocks, reducer)
    values = np.full((num_blocks, options.max_run), np.nan)
    scorer, shape, info = None, None, {}
    bar = progress_bar(num_blocks + 1, progress, desc="scoring", unit="state")
    window: dict[int, object] = {}
    expected = 0
    try:
        for b, h in states:
            if b != expected or b > num_blocks:
                raise ValueError(f"states must come as b = 0..{num_blocks} in order; got b={b} after {expected - 1}")
            x = _token_rows(h, options.skip_first)
            if scorer is None:
                shape = tuple(h.shape)
                scorer, info = _setup(x, options, reducer, token_offset, total_tokens)
            elif tuple(h.shape) != shape:
                raise ValueError(f"state {b} has shape {tuple(h.shape)}, state 0 had {shape}")
            entry = scorer.encode(x)
            for a in range(max(0, b - options.max_run), b):
                part = scorer.pair(window[a], entry)
                if scorer.reduces:
                    part = reducer.all_reduce_sum(part)
                values[a, b - a - 1] = scorer.finish(part, window[a], entry)
            window[b] = entry
            window.pop(b - options.max_run, None)  # runs ending later start at b - max_run + 1 or after
            del entry
            side.add(b, x)
            del x, h
            expected += 1
            bar.update(1)
    finally:
        bar.close()
        window.clear()
        side.window.clear()
    if expected != num_blocks + 1:
        raise ValueError(f"expected {num_blocks + 1} states (h_0..h_{num_blocks}), got {expected}")
    settings = {**options.to_dict(), "num_blocks": num_blocks, "state_shape": list(shape), **info}
    if options.estimator in DISTANCE_ESTIMATORS:
        settings["reduction"] = None
    if runs:
        settings["companions"] = dict(runs)
    return ScoreTable(values=values, estimator=options.estimator, settings=settings,
                      companions=_companion_tables(runs, side.values, values, options, num_blocks, shape, info))


class _Companions:
    """The similarity tables scored beside the main one, from the row dot products of one sweep per state.

    ``runs``: estimator -> longest run of each table scored here (not read off the main table).
    """

    def __init__(self, runs: dict[str, int], num_blocks: int, reducer):
        self.runs, self.reducer = runs, reducer
        self.longest = max(runs.values(), default=0)
        self.scorers = {name: PooledGaussianCompanion(reducer=reducer) if name == "gaussian"
                        else CosineScorer(angular=name == "angular", reducer=reducer) for name in runs}
        self.cosine = CosineScorer(angular=False, reducer=reducer)
        self.values = {name: np.full((num_blocks, run), np.nan) for name, run in runs.items()}
        self.window: dict[int, object] = {}

    def add(self, b: int, x: torch.Tensor) -> None:
        """State ``h_b``'s token rows ``x``: score every run ending at ``b``, keep ``b`` for later runs."""
        if not self.scorers:
            return
        state = self.cosine.encode(x)  # (x, row norms), as the cosine and angular scorers keep it
        gaussian = self.scorers.get("gaussian")
        if gaussian is not None:  # and the element moments the pooled correlation needs
            state = (*state, gaussian.moments(*state))
        starts = range(max(0, b - self.longest), b)
        # every pair ending at b in one sweep and one collective; one sweep serves every table
        stats = self.reducer.all_reduce_sum(self.cosine.pairs([self.window[a] for a in starts], state)) if b else []
        for a, pair_stats in zip(starts, stats):
            for name, scorer in self.scorers.items():
                if b - a <= self.runs[name]:
                    self.values[name][a, b - a - 1] = scorer.finish(pair_stats, self.window[a], state)
        self.window[b] = state
        self.window.pop(b - self.longest, None)


def _companion_tables(runs: dict[str, int], side: dict, values: np.ndarray, options: ScoringOptions,
                      num_blocks: int, shape, info: dict) -> dict[str, ScoreTable]:
    """Every companion table: scored beside the main one (``side``), or a slice of the main ``values``."""
    tables = {}
    for name, run in runs.items():
        reduction = "pooled" if name == "gaussian" else None
        own = {**options.replace(estimator=name, max_run=run, reduction=reduction or "pooled").to_dict(),
               "num_blocks": num_blocks, "state_shape": list(shape), **info, "edge_rows": None,
               "bins_resolved": None, "reduction": reduction, "companion_of": options.estimator}
        table_values = side[name] if name in side else values[:, :run].copy()
        tables[name] = ScoreTable(values=table_values, estimator=name, settings=own)
    return tables


def read_off_main(name: str, run: int, options: ScoringOptions) -> bool:
    """Whether the companion ``name`` up to ``run`` is a slice of the main table (same estimator and reduction)."""
    if name != options.estimator or run > options.max_run:
        return False
    return name != "gaussian" or options.reduction == "pooled"


def _check_companions(companions: Mapping[str, int] | None, num_blocks: int) -> dict[str, int]:
    """``{estimator: longest run}`` of the companion tables, checked."""
    if companions is None:
        return {}
    if not isinstance(companions, Mapping):
        raise ValueError(f"companions must map an estimator to a run length, e.g. {{'cosine': 1, 'angular': 3}}, "
                         f"got {companions!r}")
    out = {}
    for name, run in companions.items():
        if name not in COMPANION_ESTIMATORS:
            raise ValueError(f"companion tables are the similarity baselines {DISTANCE_ESTIMATORS} and the pooled "
                             f"'gaussian' MI, got {name!r}")
        check_int(f"companions[{name!r}]", run, low=1)
        if run > num_blocks:
            raise ValueError(f"companions[{name!r}]={run} but the model has {num_blocks} blocks; "
                             f"use a run length <= {num_blocks}")
        out[name] = run
    return out


def _setup(x: torch.Tensor, options: ScoringOptions, reducer, token_offset: int, total_tokens: int | None):
    """Global token count, resolved bins and the scorer, from the first state's rows ``x: (n, d)``."""
    n_local, d = x.shape
    counted = int(reducer.all_reduce_sum(torch.tensor([n_local], dtype=torch.int64, device=x.device))[0])
    if total_tokens is not None and int(total_tokens) != counted:
        raise ValueError(f"total_tokens={total_tokens} but the processes hold {counted} scored token rows together")
    if token_offset + n_local > counted:
        raise ValueError(f"token_offset={token_offset} plus this process's {n_local} token rows exceeds the "
                         f"{counted} token rows of all processes")
    o = options
    nb = resolve_bins(o.bins, counted * (d if o.reduction == "pooled" else 1)) if o.estimator == "hist" else None
    scorer = make_scorer(o.estimator, reduction=o.reduction, n_local=n_local, d=d, total=counted,
                         token_offset=token_offset, device=x.device, bins=nb, binning=o.binning, k=o.k,
                         bias_correction=o.bias_correction, max_samples=o.max_samples, seed=o.seed,
                         edge_tokens=o.edge_tokens, projection_dim=o.projection_dim, reducer=reducer,
                         backend=o.backend)
    info = {"tokens": counted, "tokens_this_process": n_local, "hidden_size": d,
            "edge_rows": min(counted, o.edge_tokens) if o.estimator == "hist" else None, "bins_resolved": nb}
    return scorer, info
