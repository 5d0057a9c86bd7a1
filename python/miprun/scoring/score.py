"""The score table in one forward pass.

As each hidden state ``h_b`` appears, every run ending at ``b`` (``MI(h_a, h_b)`` for
``b - max_run <= a < b``) is scored against a window of the last ``max_run`` states, kept
on the states' device in compact form (:mod:`miprun.window`). One pass over the blocks
gives the whole table, and no hidden state goes to the host.

Data-parallel calibration: K processes holding contiguous shards of the calibration
samples pass a ``reducer`` (see :class:`Reducer`) and their shard's ``token_offset``; edge
rows and KSG subsamples are chosen by GLOBAL token index and gathered, histogram counts
and other sums are all-reduced, so each process gets the single-process table (exactly
for ``hist`` and ``ksg``; up to float summation order for ``gaussian``, ``cosine`` and
``angular``).
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Protocol, runtime_checkable

import numpy as np
import torch

from miprun.mi import REDUCTIONS
from miprun.mi.binning import BIN_RULES, resolve_bins
from miprun.mi.hist import BIAS_CORRECTIONS
from miprun.mi.ksg import DEFAULT_PROJECTION_DIM
from miprun.scoring.table import DISTANCE_ESTIMATORS, ScoreTable
from miprun.scoring.scorers import make_scorer

__all__ = ["Reducer", "LocalReducer", "score_states", "score_blocks", "default_max_run", "DEFAULT_EDGE_TOKENS"]

#: Quantile edges use every token row up to this many, else a seeded subset of this size.
DEFAULT_EDGE_TOKENS = 65_536
BINNINGS = ("quantile", "uniform")
BACKENDS = ("auto", "reference", "native", "triton")


@runtime_checkable
class Reducer(Protocol):
    """Collective operations across data-parallel processes.

    Every process calls each method with a tensor of the same dtype (and, for
    ``all_reduce_sum``, the same shape) in the same order.
    """

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over processes; every process gets the result."""
        ...

    def all_gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's tensor along dim 0, in rank order (row counts may differ)."""
        ...


class LocalReducer:
    """The single-process reducer: sums and gathers over one process are the tensor itself."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def default_max_run(num_remove: int | None, num_blocks: int) -> int:
    """The longest run to score: the number of blocks to remove where known, else 1; at most ``num_blocks``."""
    return max(1, min(int(num_remove) if num_remove else 1, num_blocks))


def _check_options(estimator, reduction, bins, binning, k, bias_correction, max_samples, skip_first,
                   edge_tokens, backend) -> None:
    if estimator not in REDUCTIONS:
        raise ValueError(f"estimator must be one of {tuple(REDUCTIONS)}, got {estimator!r}")
    if estimator not in DISTANCE_ESTIMATORS and reduction not in REDUCTIONS[estimator]:
        raise ValueError(f"estimator {estimator!r} supports reduction {REDUCTIONS[estimator]}, got {reduction!r}")
    if estimator == "hist":
        if not (isinstance(bins, int) and not isinstance(bins, bool)) and bins not in BIN_RULES:
            raise ValueError(f"bins must be an int in 2..256 or one of {BIN_RULES}, got {bins!r}")
        if binning not in BINNINGS:
            raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
        if bias_correction not in BIAS_CORRECTIONS:
            raise ValueError(f"bias_correction must be None or 'miller_madow', got {bias_correction!r}")
    if estimator == "ksg" and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"k must be a positive int, got {k!r}")
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 2):
        raise ValueError(f"max_samples must be None or an int >= 2, got {max_samples!r}")
    if not isinstance(skip_first, int) or skip_first < 0:
        raise ValueError(f"skip_first must be an int >= 0, got {skip_first!r}")
    if not isinstance(edge_tokens, int) or edge_tokens < 1:
        raise ValueError(f"edge_tokens must be a positive int, got {edge_tokens!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


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


def score_states(states: Iterable[tuple[int, torch.Tensor]], num_blocks: int, *, estimator: str = "hist",
                 reduction: str = "pooled", max_run: int, bins="auto", binning: str = "quantile", k: int = 3,
                 bias_correction: str | None = None, max_samples: int | None = None, seed: int = 0,
                 skip_first: int = 0, progress: bool = True, reducer: Reducer | None = None,
                 token_offset: int = 0, total_tokens: int | None = None,
                 edge_tokens: int = DEFAULT_EDGE_TOKENS, projection_dim: int = DEFAULT_PROJECTION_DIM,
                 backend: str = "auto") -> ScoreTable:
    """Score every run of up to ``max_run`` blocks while the hidden states stream past.

    Parameters
    ----------
    states : iterable of (int, Tensor)
        ``(b, h_b)`` for ``b = 0..num_blocks`` in order (as :func:`miprun.layerwise.iter_hidden_states`
        yields them); ``h_b: (n_samples, seq_len, d)`` on any device, any float dtype.
    num_blocks : int
        ``T``, the number of blocks.
    estimator : {"hist", "ksg", "gaussian", "cosine", "angular"}
        As :func:`miprun.mutual_information`; ``cosine``/``angular`` compare token rows and
        ignore ``reduction``.
    reduction : {"pooled", "per_dim", "projection"}
        As :func:`miprun.mutual_information`.
    max_run : int
        Longest run scored (``1..num_blocks``); the window holds this many states.
    bins, binning, k, bias_correction, max_samples, seed, projection_dim
        As :func:`miprun.mutual_information`. ``bins`` rules count the tokens of ALL
        processes. ``seed`` also seeds the edge-row subset.
    skip_first : int
        Leave out the first ``skip_first`` positions of every sample (attention-sink
        outliers); 0 (the paper's setting) scores every token.
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
    edge_tokens : int
        Quantile (and uniform) edges come from all token rows when there are at most
        this many, else from a seeded subset of this many rows chosen by global index.
    backend : {"auto", "reference", "native", "triton"}
        Implementation of the histogram and KSG steps (``auto``: by device).

    Returns
    -------
    ScoreTable
        ``values[a, L-1] = score(h_a, h_{a+L})`` for ``L <= max_run``; NaN past the last
        block. ``settings`` records every option, the resolved bin count and token counts.

    Notes
    -----
    With ``edge_tokens`` at least the token count, each entry equals
    ``mutual_information(h_a_rows, h_b_rows, ...)`` on the scored token rows (up to float
    summation order for ``gaussian``, ``cosine`` and ``angular``). The window holds uint8
    codes for ``hist``, subsamples for ``ksg``, and the states themselves (plus float64
    row or column statistics) for ``gaussian``, ``cosine`` and ``angular``.
    """
    _check_options(estimator, reduction, bins, binning, k, bias_correction, max_samples, skip_first,
                   edge_tokens, backend)
    if not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks must be a positive int, got {num_blocks!r}")
    if not isinstance(max_run, int) or not 1 <= max_run <= num_blocks:
        raise ValueError(f"max_run must be an int in 1..{num_blocks} (the number of blocks), got {max_run!r}")
    if not isinstance(token_offset, int) or token_offset < 0:
        raise ValueError(f"token_offset must be an int >= 0, got {token_offset!r}")
    reducer = reducer if reducer is not None else LocalReducer()
    values = np.full((num_blocks, max_run), np.nan)
    window: dict[int, object] = {}
    scorer = None
    shape = None
    info: dict = {}
    bar = _bar(num_blocks + 1, progress)
    try:
        expected = 0
        for b, h in states:
            if b != expected or b > num_blocks:
                raise ValueError(f"states must come as b = 0..{num_blocks} in order; got b={b} after {expected - 1}")
            x = _token_rows(h, skip_first)
            if scorer is None:
                shape = tuple(h.shape)
                scorer, info = _setup(x, estimator=estimator, reduction=reduction, bins=bins, binning=binning, k=k,
                                      bias_correction=bias_correction, max_samples=max_samples, seed=seed,
                                      reducer=reducer, token_offset=token_offset, total_tokens=total_tokens,
                                      edge_tokens=edge_tokens, projection_dim=projection_dim, backend=backend)
            elif tuple(h.shape) != shape:
                raise ValueError(f"state {b} has shape {tuple(h.shape)}, state 0 had {shape}")
            entry = scorer.encode(x)
            for a in range(max(0, b - max_run), b):
                part = scorer.pair(window[a], entry)
                if scorer.reduces:
                    part = reducer.all_reduce_sum(part)
                values[a, b - a - 1] = scorer.finish(part, window[a], entry)
            window[b] = entry
            window.pop(b - max_run, None)  # runs ending later start at b - max_run + 1 or after
            del x, h, entry
            expected += 1
            bar.update(1)
    finally:
        bar.close()
        window.clear()
    if expected != num_blocks + 1:
        raise ValueError(f"expected {num_blocks + 1} states (h_0..h_{num_blocks}), got {expected}")
    settings = {"estimator": estimator, "reduction": None if estimator in DISTANCE_ESTIMATORS else reduction,
                "bins": bins, "binning": binning, "k": k, "bias_correction": bias_correction,
                "max_samples": max_samples, "seed": seed, "skip_first": skip_first, "max_run": max_run,
                "edge_tokens": edge_tokens, "projection_dim": projection_dim, "num_blocks": num_blocks,
                "state_shape": list(shape), "backend": backend, **info}
    return ScoreTable(values=values, estimator=estimator, settings=settings)


def _setup(x: torch.Tensor, *, estimator, reduction, bins, binning, k, bias_correction, max_samples, seed,
           reducer, token_offset, total_tokens, edge_tokens, projection_dim, backend):
    """Global token count, resolved bins and the scorer, from the first state's rows ``x: (n, d)``."""
    n_local, d = x.shape
    counted = int(reducer.all_reduce_sum(torch.tensor([n_local], dtype=torch.int64, device=x.device))[0])
    if total_tokens is not None and int(total_tokens) != counted:
        raise ValueError(f"total_tokens={total_tokens} but the processes hold {counted} scored token rows together")
    if token_offset + n_local > counted:
        raise ValueError(f"token_offset={token_offset} plus this process's {n_local} token rows exceeds the "
                         f"{counted} token rows of all processes")
    nb = None
    if estimator == "hist":
        nb = resolve_bins(bins, counted * (d if reduction == "pooled" else 1))
    scorer = make_scorer(estimator, reduction=reduction, n_local=n_local, d=d, total=counted,
                         token_offset=token_offset, device=x.device, bins=nb, binning=binning, k=k,
                         bias_correction=bias_correction, max_samples=max_samples, seed=seed,
                         edge_tokens=edge_tokens, projection_dim=projection_dim, reducer=reducer, backend=backend)
    info = {"tokens": counted, "tokens_this_process": n_local, "hidden_size": d,
            "edge_rows": min(counted, edge_tokens) if estimator == "hist" else None, "bins_resolved": nb}
    return scorer, info


def _bar(total: int, progress: bool):
    from miprun.util.progress import progress_bar
    return progress_bar(total, progress, desc="scoring", unit="state")


# ----------------------------------------------------------------------------- from a model
def token_digest(input_ids: torch.Tensor) -> str:
    """sha256 of the calibration token ids (int64, row-major): identifies the exact tokens scored."""
    return hashlib.sha256(input_ids.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()).hexdigest()


def resolve_calibration(calibration, *, tokenizer=None, n_samples: int = 128, seq_len: int = 2048,
                        seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Token ids ``(n_samples, seq_len)`` and their description.

    ``calibration`` is a LongTensor of token ids, a text source (path; needs ``tokenizer``)
    or a ``(source, tokenizer)`` pair, read with :func:`miprun.calibrate.load_calibration`.
    """
    import os
    from miprun.calibration.windows import describe_calibration, load_calibration
    if isinstance(calibration, (str, os.PathLike)):
        if tokenizer is None:
            raise ValueError(f"calibration text {calibration} needs a tokenizer; pass tokenizer=... or token ids")
        calibration = (calibration, tokenizer)
    if isinstance(calibration, torch.Tensor):
        ids = calibration
        if ids.ndim != 2 or ids.dtype != torch.long or ids.numel() == 0:
            raise ValueError(f"calibration token ids must be a non-empty LongTensor (n_samples, seq_len), got "
                             f"{tuple(ids.shape)} {ids.dtype}")
        desc = {"source": "token ids"}
    elif isinstance(calibration, (tuple, list)) and len(calibration) == 2:
        source, tok = calibration
        ids = load_calibration(source, tok, n_samples=n_samples, seq_len=seq_len, seed=seed)
        desc = describe_calibration(source, n_samples=n_samples, seq_len=seq_len, seed=seed)
    else:
        raise ValueError("calibration must be a LongTensor of token ids (n_samples, seq_len), a text source with "
                         f"a tokenizer, or a (source, tokenizer) pair; got {type(calibration).__name__}")
    desc.update({"n_samples": int(ids.shape[0]), "seq_len": int(ids.shape[1]), "tokens": int(ids.numel()),
                 "sha256": token_digest(ids)})
    return ids, desc


def score_blocks(model, calibration, *, estimator: str = "hist", reduction: str = "pooled",
                 max_run: int | None = None, num_remove: int | None = None, bins="auto",
                 binning: str = "quantile", k: int = 3, bias_correction: str | None = None,
                 max_samples: int | None = None, seed: int = 0, skip_first: int = 0,
                 edge_tokens: int = DEFAULT_EDGE_TOKENS, projection_dim: int = DEFAULT_PROJECTION_DIM,
                 n_samples: int = 128, seq_len: int = 2048, calibration_seed: int = 0, batch_size: int = 8,
                 device=None, dtype=None, offload: bool | str = False, progress: bool = True,
                 reducer: Reducer | None = None, token_offset: int = 0, total_tokens: int | None = None,
                 backend: str = "auto", trust_remote_code: bool = False) -> ScoreTable:
    """Score every run of up to ``max_run`` blocks of a model in one forward pass.

    Parameters
    ----------
    model : transformers PreTrainedModel, or str / Path
        A loaded causal LM, or a local folder / hub id (loaded with
        :func:`miprun.models.load_model`; with ``offload=True`` a local folder streamed one
        block at a time by :func:`miprun.stream.iter_hidden_states_offload`).
    calibration : LongTensor (n_samples, seq_len), or (source, tokenizer)
        Token ids, or a text source and tokenizer for :func:`miprun.calibrate.load_calibration`
        (with ``n_samples``, ``seq_len``, ``calibration_seed``).
    max_run : int, optional
        Longest run to score. Default: ``num_remove`` (the number of blocks to be
        removed) when given, else 1 (single blocks only).
    device, dtype
        Compute device and (for a model given by name) the dtype to load it in.
    offload : bool or "auto"
        Stream the weights block by block from the checkpoint (for models larger than
        memory); ``"auto"`` streams when the model would not fit (see
        :func:`miprun.stream.resolve_offload`).
    Other parameters are those of :func:`score_states`.

    Returns
    -------
    ScoreTable
        ``settings`` holds every option plus a ``calibration`` description (source,
        sizes, token count, sha256 of the token ids).
    """
    from miprun.hidden.runner import iter_hidden_states
    from miprun.models.loading import load_config, local_dir
    from miprun.models.blocks import num_blocks_of
    _check_options(estimator, reduction, bins, binning, k, bias_correction, max_samples, skip_first,
                   edge_tokens, backend)
    ids, calib_desc = resolve_calibration(calibration, n_samples=n_samples, seq_len=seq_len, seed=calibration_seed)
    if offload == "auto":
        from miprun.hidden.stream import resolve_offload
        offload = resolve_offload("auto", model, device=device, dtype=dtype, n_samples=int(ids.shape[0]),
                                  seq_len=int(ids.shape[1]))
    if offload:
        if not isinstance(model, (str, bytes)) and not hasattr(model, "__fspath__"):
            raise ValueError("offload=True streams weights from a checkpoint folder: pass the model's folder, "
                             "not a loaded model")
        folder = local_dir(model)
        if folder is None:
            raise ValueError(f"offload=True needs a local checkpoint folder, got hub id {model!r}; download it first")
        config = load_config(folder, trust_remote_code=trust_remote_code)
        num_blocks = num_blocks_of(config)
        from miprun.hidden.memory import window_bytes
        from miprun.hidden.stream import iter_hidden_states_offload
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 0)
        run = default_max_run(num_remove, num_blocks) if max_run is None else max_run
        # the pre-flight memory check counts the score window too, not only the block
        window = window_bytes(estimator, n_tokens=int(ids.numel()), hidden=hidden, max_run=run)
        states = iter_hidden_states_offload(folder, ids, device=device, dtype=dtype, batch_size=batch_size,
                                            progress=progress, window_bytes=window)
    else:
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            from miprun.models.loading import load_model
            model = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        from miprun.models.blocks import find_blocks
        blocks = find_blocks(model)[0]
        num_blocks = len(blocks)
        states = iter_hidden_states(model, ids, batch_size=batch_size, device=device, progress=progress,
                                    blocks=blocks)
    run = default_max_run(num_remove, num_blocks) if max_run is None else max_run
    table = score_states(states, num_blocks, estimator=estimator, reduction=reduction, max_run=run, bins=bins,
                         binning=binning, k=k, bias_correction=bias_correction, max_samples=max_samples, seed=seed,
                         skip_first=skip_first, progress=False, reducer=reducer, token_offset=token_offset,
                         total_tokens=total_tokens, edge_tokens=edge_tokens, projection_dim=projection_dim,
                         backend=backend)
    table.settings.update({"calibration": calib_desc, "batch_size": batch_size, "offload": bool(offload),
                           "dtype": None if dtype is None else str(dtype)})
    return table
