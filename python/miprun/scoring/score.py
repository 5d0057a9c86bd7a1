"""Score a model: calibration tokens in, the score table out, in one forward pass.

:func:`score_blocks` is the public entry point (a model or a folder, token ids or a text
source). :func:`score_tokens` is the step the pipeline calls once calibration is resolved:
it opens the model's hidden states (in memory, streamed or device-mapped, chosen once in
:mod:`miprun.hidden`), shares the tokens across data-parallel processes, and runs
:func:`miprun.scoring.onepass.score_states`. Both can score companion tables (the
``cosine`` and ``angular`` tables of the ShortGPT and Gromov baselines) in the same pass,
for ``verify`` to measure those baselines' plans too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from miprun.calibration.options import CalibrationOptions
from miprun.calibration.resolve import resolve_calibration
from miprun.hidden.memory import window_bytes
from miprun.hidden.options import ExecutionOptions
from miprun.hidden.runner import iter_hidden_states
from miprun.hidden.sources import open_source
from miprun.models.blocks import text_config
from miprun.models.loading import inspect_model, load_tokenizer
from miprun.scoring.distributed import DataParallel
from miprun.scoring.onepass import read_off_main, score_states
from miprun.scoring.options import ScoringOptions
from miprun.scoring.table import ScoreTable
from miprun.util.options import route

__all__ = ["score_blocks", "score_tokens", "Scored"]


@dataclass
class Scored:
    """What :func:`score_tokens` produced: the table, the block source it read (its model, when loaded whole),
    and the seconds spent opening it (loading the model, or the streaming pre-flight)."""

    table: ScoreTable
    source: Any
    load_s: float = 0.0


def score_tokens(model, input_ids: torch.Tensor, options: ScoringOptions, execution: ExecutionOptions, *,
                 config, max_run: int, data_parallel: DataParallel | None = None, progress: bool = True,
                 companions: Mapping[str, int] | None = None) -> Scored:
    """Score every run of up to ``max_run`` blocks of ``model`` over resolved token ids.

    Parameters
    ----------
    model : loaded model, local folder or hub id
        Opened with :func:`miprun.hidden.sources.open_source` under ``execution``.
    input_ids : LongTensor (n_samples, seq_len)
        All calibration tokens (every process passes the same; each scores its share).
    options, execution
        Scoring and execution settings.
    config : transformers config
        The model's (read once by the caller).
    max_run : int
        Longest run scored (overrides ``options.max_run``, already resolved by the caller).
    data_parallel : DataParallel, optional
        Share the samples across processes; every process gets the single-process table.
    companions : mapping of str to int, optional
        Similarity tables scored in the same pass, estimator -> longest run (e.g.
        :meth:`miprun.selection.options.SelectionOptions.companions`); carried on the
        table's ``companions`` (see :func:`miprun.scoring.onepass.score_states`).
    """
    options = options.replace(max_run=max_run)
    dp = data_parallel
    ids, share = (input_ids, {}) if dp is None else dp.scoring_share(input_ids, skip_first=options.skip_first)
    if dp is not None and dp.device is not None and execution.device is None:
        execution = execution.replace(device=str(dp.device))
    t = time.perf_counter()
    source = open_source(model, offload=execution.offload, device_map=execution.device_map,
                         max_memory=execution.max_memory, device=execution.device, dtype=execution.load_dtype,
                         trust_remote_code=execution.trust_remote_code, n_samples=int(ids.shape[0]),
                         seq_len=int(ids.shape[1]), batch_size=execution.batch_size,
                         config=config, window_bytes=_window_bytes(config, ids, options, companions))
    load_s = time.perf_counter() - t
    states = iter_hidden_states(source, ids, batch_size=execution.batch_size, progress=progress)
    table = score_states(states, source.num_blocks, options, progress=False, companions=companions, **share)
    table.settings.update({"batch_size": execution.batch_size, "offload": source.streams_weights,
                           "dtype": execution.dtype})
    if dp is not None:
        table.settings["world_size"] = dp.world_size
    return Scored(table=table, source=source, load_s=load_s)


def _window_bytes(config, ids: torch.Tensor, options: ScoringOptions,
                  companions: Mapping[str, int] | None = None) -> int:
    """Bytes the score window (and the companion tables' window) keeps, for the streamed path's pre-flight check."""
    text = text_config(config)
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 0)
    n_tokens = int(ids.numel())
    total = window_bytes(options.estimator, n_tokens=n_tokens, hidden=hidden, max_run=options.max_run)
    runs = [int(run) for name, run in (companions or {}).items() if not read_off_main(name, int(run), options)]
    if runs:  # the companions keep the states themselves, as the cosine scorer does
        total += window_bytes("cosine", n_tokens=n_tokens, hidden=hidden, max_run=max(runs))
    return total


def score_blocks(model, calibration, options: ScoringOptions | None = None, *,
                 execution: ExecutionOptions | None = None, calibration_options: CalibrationOptions | None = None,
                 num_remove: int | None = None, tokenizer=None, data_parallel: DataParallel | None = None,
                 progress: bool = True, companions: Mapping[str, int] | None = None, **settings) -> ScoreTable:
    """Score every run of up to ``max_run`` blocks of a model in one forward pass.

    Parameters
    ----------
    model : transformers PreTrainedModel, or str / Path
        A loaded causal LM, or a local folder / hub id.
    calibration : LongTensor (n_samples, seq_len), path, or (source, tokenizer)
        Token ids, or a text source (read with the model's own tokenizer unless
        ``tokenizer`` is given).
    options, execution, calibration_options
        Scoring (:class:`ScoringOptions`), execution (:class:`ExecutionOptions`: device,
        dtype, batch size, offload, device map) and calibration settings. Their fields may
        also be given as keyword arguments (``estimator="ksg", device="cuda", n_samples=64``);
        ``seed`` sets both the calibration's and the estimator's.
    num_remove : int, optional
        Blocks to be removed: the default ``max_run``. Without it and ``max_run``, single
        blocks only.
    data_parallel : DataParallel, optional
        Share the calibration samples across processes (``torchrun``).
    companions : mapping of str to int, optional
        Tables to score in the same pass, estimator (``"cosine"``, ``"angular"``,
        ``"gaussian"``) -> longest run; ``companion_runs(N)`` is what
        :func:`miprun.selection.verify.verify` reads to add the ShortGPT, Gromov and
        Gaussian plans for ``N`` blocks to its candidates.

    Returns
    -------
    ScoreTable
        ``settings`` holds every option plus a ``calibration`` description (source, sizes,
        token count, sha256 of the token ids); ``companions`` the companion tables.
    """
    calib_kw, exec_kw, score_kw = route(settings, CalibrationOptions, ExecutionOptions, ScoringOptions)
    options = (options or ScoringOptions()).replace(**score_kw)
    execution = (execution or ExecutionOptions()).replace(**exec_kw)
    calibration_options = (calibration_options or CalibrationOptions()).replace(**calib_kw)
    info = inspect_model(model, trust_remote_code=execution.trust_remote_code, require_family=False)
    if tokenizer is None and not isinstance(calibration, (torch.Tensor, tuple, list)):
        tokenizer = load_tokenizer(info.name, trust_remote_code=execution.trust_remote_code)
    ids, desc = resolve_calibration(calibration, tokenizer=tokenizer, options=calibration_options,
                                    config=info.config)
    run = options.run_length(num_remove, info.num_blocks)
    scored = score_tokens(model, ids, options, execution, config=info.config, max_run=run, data_parallel=data_parallel,
                          progress=progress, companions=companions)
    scored.table.settings["calibration"] = desc
    scored.table.settings["model"] = info.name
    return scored.table
