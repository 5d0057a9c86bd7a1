"""The one-pass score table against pairwise mutual_information, skip_first, edge rows, and data parallelism."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from support import ThreadReducer, requires_native
from tiny_models import tiny_model

from miprun import mutual_information
from miprun.hidden.runner import iter_hidden_states
from miprun.mi.codes import codes_from_edges_ref, compute_edges_ref, joint_counts_ref, mi_from_counts
from miprun.scoring.distributed import LocalReducer, Reducer
from miprun.scoring.onepass import score_states
from miprun.scoring.options import ScoringOptions
from miprun.scoring.score import score_blocks
from miprun.scoring.scorers import global_subset

CASES = [("hist", "pooled"), ("hist", "per_dim"), ("ksg", "pooled"), ("ksg", "per_dim"), ("ksg", "projection"),
         ("gaussian", "pooled"), ("gaussian", "per_dim"), ("cosine", "pooled"), ("angular", "pooled")]
SUMMED = ("gaussian", "cosine", "angular")  # float sums: equal up to summation order


def _states(n=4, seq=9, d=6, T=5, seed=0, dtype=torch.float64):
    """A chain of random states: each adds fresh noise of growing size, so MI falls with run length."""
    g = torch.Generator().manual_seed(seed)
    h = [torch.randn(n, seq, d, generator=g, dtype=torch.float64)]
    for b in range(T):
        h.append(h[-1] + (0.3 + 0.2 * b) * torch.randn(n, seq, d, generator=g, dtype=torch.float64))
    return [x.to(dtype) for x in h]


def _opts(estimator, reduction):
    # KSG draws 60 of the pooled elements / projected rows, so the subsample really is a subsample
    return {"max_samples": 60} if estimator == "ksg" and reduction != "per_dim" else {}


def _pairwise(states, estimator, reduction, max_run, backend, skip_first=0, **kw):
    T = len(states) - 1
    rows = [h[:, skip_first:].reshape(-1, h.shape[-1]) for h in states]
    out = np.full((T, max_run), np.nan)
    for s in range(T):
        for L in range(1, max_run + 1):
            if s + L <= T:
                out[s, L - 1] = mutual_information(rows[s], rows[s + L], estimator=estimator, reduction=reduction,
                                                   backend=backend, **kw)
    return out


def _close(estimator):
    """Data-parallel vs one process: exact for histogram counts and gathered KSG samples."""
    return dict(rtol=1e-12, atol=1e-13) if estimator in SUMMED else dict(rtol=0, atol=0)


@pytest.mark.parametrize("estimator,reduction", CASES)
def test_one_pass_equals_pairwise_reference(estimator, reduction):
    states = _states()
    kw = _opts(estimator, reduction)
    table = score_states(enumerate(states), 5, estimator=estimator, reduction=reduction, max_run=3,
                         backend="reference", progress=False, **kw)
    expected = _pairwise(states, estimator, reduction, 3, "reference", **kw)
    # same estimator arithmetic; only the order of float sums (per_dim means, gaussian/cosine) differs
    np.testing.assert_allclose(table.values, expected, rtol=1e-12, atol=1e-13)
    assert np.isnan(table.values[4, 1]) and np.isnan(table.values[3, 2])  # runs past the last block
    assert table.estimator == estimator and table.max_run == 3 and table.num_blocks == 5


@requires_native
@pytest.mark.parametrize("estimator,reduction", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_pass_equals_pairwise_native(estimator, reduction, dtype):
    states = _states(seed=1, dtype=dtype)
    kw = _opts(estimator, reduction)
    table = score_states(enumerate(states), 5, estimator=estimator, reduction=reduction, max_run=2,
                         progress=False, **kw)
    expected = _pairwise(states, estimator, reduction, 2, "auto", **kw)
    tol = dict(rtol=1e-12, atol=1e-12)  # native MI from codes vs the one-call estimator: same counts
    np.testing.assert_allclose(table.values, expected, **tol)


def test_scores_fall_with_run_length_and_hist_settings_are_recorded():
    table = score_states(enumerate(_states()), 5, max_run=3, backend="reference", progress=False,
                         bias_correction="miller_madow")
    v = table.values
    assert np.all(v[:3, 0] > v[:3, 2])  # more noise added over longer runs
    s = table.settings
    assert s["tokens"] == 4 * 9 and s["bins_resolved"] == math.ceil((4 * 9 * 6) ** (1 / 3))
    assert s["bias_correction"] == "miller_madow" and s["max_run"] == 3 and s["edge_rows"] == 36


@pytest.mark.parametrize("estimator", ["hist", "gaussian", "cosine"])
def test_skip_first_drops_the_first_positions(estimator):
    states = _states(seed=3)
    skipped = score_states(enumerate(states), 5, estimator=estimator, max_run=2, skip_first=3,
                           backend="reference", progress=False)
    sliced = score_states(enumerate([h[:, 3:] for h in states]), 5, estimator=estimator, max_run=2,
                          backend="reference", progress=False)
    full = score_states(enumerate(states), 5, estimator=estimator, max_run=2, backend="reference", progress=False)
    np.testing.assert_allclose(skipped.values, sliced.values, rtol=1e-12)
    assert not np.allclose(skipped.values[:4], full.values[:4])
    assert skipped.settings["tokens"] == 4 * 6


def test_skip_first_is_the_attention_sink_mask():
    """A huge outlier at position 0 (an attention sink) dominates pooled uniform bins unless skipped."""
    states = _states(seed=4)
    for h in states:
        h[:, 0, 0] = 1e4
    kw = dict(binning="uniform", max_run=1, backend="reference", progress=False)
    with_sink = score_states(enumerate(states), 5, **kw).values[:, 0]
    without = score_states(enumerate(states), 5, skip_first=1, **kw).values[:, 0]
    assert np.all(without > with_sink + 0.2)


def test_edges_come_from_a_seeded_subset_of_rows_when_tokens_exceed_edge_tokens():
    states = _states(n=6, seq=10, seed=5)
    table = score_states(enumerate(states), 5, max_run=2, edge_tokens=17, seed=7, bins=5,
                         backend="reference", progress=False)
    rows = [h.reshape(-1, 6) for h in states]
    idx = global_subset(60, 17, 7)
    assert idx is not None and idx.numel() == 17
    codes = [codes_from_edges_ref(x, compute_edges_ref(x[idx], 5, "quantile", False)) for x in rows]
    expected = mi_from_counts(joint_counts_ref(codes[1], codes[3], 5, False))
    assert table.values[1, 1] == expected
    # and they differ from edges over all rows
    full = score_states(enumerate(states), 5, max_run=2, bins=5, backend="reference", progress=False)
    assert not np.allclose(table.values[:4], full.values[:4])
    assert table.settings["edge_rows"] == 17


def _data_parallel(states, bounds, skip_first=0, **kw):
    K = len(bounds)
    shared = {"slots": [None] * K, "barrier": threading.Barrier(K)}
    tables, errors = [None] * K, []
    per = states[0].shape[1] - skip_first

    def run(rank):
        lo, hi = bounds[rank]
        try:
            tables[rank] = score_states(enumerate([h[lo:hi] for h in states]), len(states) - 1,
                                        reducer=ThreadReducer(rank, shared), token_offset=lo * per,
                                        total_tokens=states[0].shape[0] * per, skip_first=skip_first,
                                        progress=False, **kw)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(K)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return tables


@pytest.mark.parametrize("estimator,reduction", CASES)
def test_data_parallel_shards_give_the_single_process_table(estimator, reduction):
    states = _states(n=5, seq=8, seed=6)
    kw = dict(estimator=estimator, reduction=reduction, max_run=2, backend="reference", edge_tokens=23,
              skip_first=1, seed=3, **_opts(estimator, reduction))
    single = score_states(enumerate(states), 5, progress=False, **kw)
    for bounds in ([(0, 2), (2, 5)], [(0, 1), (1, 3), (3, 5)]):  # unequal shards
        for table in _data_parallel(states, bounds, **kw):
            np.testing.assert_allclose(table.values, single.values, **_close(estimator))
            assert table.settings["tokens"] == single.settings["tokens"] == 35


def test_local_reducer_satisfies_the_protocol():
    assert isinstance(LocalReducer(), Reducer)
    t = torch.arange(6.0).reshape(3, 2)
    assert LocalReducer().all_gather_rows(t) is t and LocalReducer().all_reduce_sum(t) is t


def test_bad_stream_and_options_are_refused():
    states = _states()
    with pytest.raises(ValueError, match="in order"):
        score_states([(0, states[0]), (2, states[2])], 5, max_run=1, progress=False)
    with pytest.raises(ValueError, match="expected 6 states"):
        score_states(enumerate(states[:4]), 5, max_run=1, progress=False, backend="reference")
    with pytest.raises(ValueError, match="max_run"):
        score_states(enumerate(states), 5, max_run=6, progress=False)
    with pytest.raises(ValueError, match="shape"):
        score_states([(0, states[0]), (1, states[1][:, :5])], 1, max_run=1, progress=False, backend="reference")
    with pytest.raises(ValueError, match="total_tokens=99"):
        score_states(enumerate(states), 5, max_run=1, total_tokens=99, progress=False)
    with pytest.raises(ValueError, match="skip_first=9"):
        score_states(enumerate(states), 5, max_run=1, skip_first=9, progress=False)
    with pytest.raises(ValueError, match="supports reduction"):
        score_states(enumerate(states), 5, max_run=1, estimator="gaussian", reduction="projection")
    with pytest.raises(ValueError, match="estimator must be"):
        score_states(enumerate(states), 5, max_run=1, estimator="mine")


def test_default_max_run():
    assert ScoringOptions().run_length(None, 8) == 1
    assert ScoringOptions().run_length(3, 8) == 3
    assert ScoringOptions().run_length(20, 8) == 8
    assert ScoringOptions(max_run=2).run_length(5, 8) == 2
    with pytest.raises(ValueError, match="max_run=9 but the model has 8 blocks"):
        ScoringOptions(max_run=9).run_length(None, 8)


def test_score_blocks_equals_score_states_on_the_model_states():
    model = tiny_model("llama", preset="hf_init", num_blocks=4)
    ids = torch.randint(3, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(8))
    table = score_blocks(model, ids, num_remove=2, batch_size=3, progress=False, backend="reference")
    states = iter_hidden_states(model, ids, batch_size=4, progress=False)
    expected = score_states(states, 4, max_run=2, backend="reference", progress=False)
    np.testing.assert_allclose(table.values, expected.values, rtol=1e-12, atol=1e-12)
    assert table.max_run == 2  # from num_remove
    calib = table.settings["calibration"]
    assert calib["tokens"] == 64 and calib["source"] == "token ids" and len(calib["sha256"]) == 64
    assert score_blocks(model, ids, progress=False, backend="reference").max_run == 1
