"""Companion tables: the cosine, angular and pooled Gaussian tables scored in the same pass as the main estimator's."""

from __future__ import annotations

import math
import secrets
import threading

import numpy as np
import pytest
import torch

from miprun.scoring import scorers
from miprun.scoring.distributed import LocalReducer
from miprun.scoring.onepass import score_states
from miprun.scoring.table import ScoreTable
from support import ThreadReducer

ESTIMATORS = [("hist", "pooled"), ("gaussian", "per_dim"), ("ksg", "pooled"), ("cosine", "pooled"),
              ("angular", "pooled")]


def _states(seed, n=4, seq=9, d=6, T=6):
    """Random states, each the last plus fresh noise and a random rotation of a few coordinates."""
    g = torch.Generator().manual_seed(seed)
    h = [torch.randn(n, seq, d, generator=g, dtype=torch.float64)]
    for _ in range(T):
        step = float(torch.rand((), generator=g, dtype=torch.float64)) + 0.1
        h.append(h[-1] + step * torch.randn(n, seq, d, generator=g, dtype=torch.float64))
    return h


def _reference(states, kind, run, skip_first=0):
    """float64 numpy: 1 - mean cos (cosine), arccos(mean cos) / pi (angular) or the pooled Gaussian MI
    -1/2 log(1 - rho^2) of all element pairs (gaussian) of every run up to ``run``."""
    rows = [h[:, skip_first:].reshape(-1, h.shape[-1]).numpy().astype(np.float64) for h in states]
    T = len(states) - 1
    out = np.full((T, run), np.nan)
    for s in range(T):
        for length in range(1, run + 1):
            if s + length <= T:
                x, y = rows[s], rows[s + length]
                if kind == "gaussian":
                    rho = np.corrcoef(x.ravel(), y.ravel())[0, 1]
                    out[s, length - 1] = -0.5 * math.log1p(-rho * rho)
                    continue
                cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
                mean = float(np.clip(cos, -1, 1).mean())
                out[s, length - 1] = 1.0 - mean if kind == "cosine" else math.acos(min(max(mean, -1.0), 1.0)) / math.pi
    return out


@pytest.mark.parametrize("estimator,reduction", ESTIMATORS)
def test_companions_equal_the_float64_reference_and_leave_the_main_table_alone(estimator, reduction):
    seed = secrets.randbelow(2**31)
    states = _states(seed)
    skip_first = seed % 3
    kw = dict(estimator=estimator, reduction=reduction, max_run=2, backend="reference", skip_first=skip_first,
              max_samples=60 if estimator == "ksg" else None, progress=False)
    runs = {"cosine": 1, "angular": 4, "gaussian": 3}
    plain = score_states(enumerate(states), 6, **kw)
    table = score_states(enumerate(states), 6, companions=runs, **kw)
    assert np.array_equal(table.values, plain.values, equal_nan=True), seed
    assert set(table.companions) == set(runs) and plain.companions == {}
    assert table.settings["companions"] == runs and "companions" not in plain.settings
    for name, run in runs.items():
        companion = table.companions[name]
        assert companion.estimator == name and companion.max_run == run and companion.num_blocks == 6
        np.testing.assert_allclose(companion.values, _reference(states, name, run, skip_first), rtol=1e-11,
                                   atol=1e-13, err_msg=f"seed {seed}")
        # the same table as that estimator scored alone (gaussian: pooled, which centres before it multiplies)
        alone = score_states(enumerate(states), 6, estimator=name, max_run=run, skip_first=skip_first,
                             backend="reference", progress=False)
        if name == "gaussian" and (estimator, reduction) != ("gaussian", "pooled"):
            np.testing.assert_allclose(companion.values, alone.values, rtol=1e-11, atol=1e-14)
            assert companion.settings["reduction"] == "pooled"
        else:
            assert np.array_equal(companion.values, alone.values, equal_nan=True), seed
        assert companion.settings["companion_of"] == estimator and companion.settings["tokens"] == alone.settings["tokens"]


def test_a_companion_of_the_main_estimator_is_read_off_the_main_table():
    seed = secrets.randbelow(2**31)
    states = _states(seed)
    table = score_states(enumerate(states), 6, estimator="angular", max_run=3, progress=False,
                         companions={"angular": 2, "cosine": 1})
    assert np.array_equal(table.companions["angular"].values, table.values[:, :2], equal_nan=True)
    longer = score_states(enumerate(states), 6, estimator="angular", max_run=2, progress=False,
                          companions={"angular": 5})  # longer than max_run: scored in the second window
    np.testing.assert_allclose(longer.companions["angular"].values, _reference(states, "angular", 5), rtol=1e-12,
                               atol=1e-13, err_msg=f"seed {seed}")
    # the gaussian companion is pooled: read off a pooled gaussian table, scored beside a per_dim one
    pooled = score_states(enumerate(states), 6, estimator="gaussian", max_run=3, progress=False,
                          companions={"gaussian": 2})
    assert np.array_equal(pooled.companions["gaussian"].values, pooled.values[:, :2], equal_nan=True)
    per_dim = score_states(enumerate(states), 6, estimator="gaussian", reduction="per_dim", max_run=3,
                           progress=False, companions={"gaussian": 2})
    np.testing.assert_allclose(per_dim.companions["gaussian"].values, pooled.values[:, :2], rtol=1e-11, atol=1e-14)
    assert not np.allclose(per_dim.values[:, :2], pooled.values[:, :2], equal_nan=True)


def test_data_parallel_shards_give_the_single_process_companions():
    seed = secrets.randbelow(2**31)
    states = _states(seed, n=5, seq=8)
    kw = dict(estimator="hist", max_run=2, backend="reference", edge_tokens=23, skip_first=1,
              companions={"cosine": 1, "angular": 3, "gaussian": 2}, progress=False)
    single = score_states(enumerate(states), 6, **kw)
    bounds = [(0, 2), (2, 5)]
    shared = {"slots": [None, None], "barrier": threading.Barrier(2)}
    tables, errors = [None, None], []

    def run(rank):
        lo, hi = bounds[rank]
        try:
            tables[rank] = score_states(enumerate([h[lo:hi] for h in states]), 6,
                                        reducer=ThreadReducer(rank, shared), token_offset=lo * 7,
                                        total_tokens=35, **kw)
        except BaseException as exc:
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for table in tables:
        assert np.array_equal(table.values, single.values, equal_nan=True)
        for name in ("cosine", "angular", "gaussian"):
            np.testing.assert_allclose(table.companions[name].values, single.companions[name].values, rtol=1e-12,
                                       atol=1e-13, err_msg=f"seed {seed}")


def test_companion_tables_round_trip_and_bad_requests_are_refused():
    states = _states(secrets.randbelow(2**31), T=4)
    table = score_states(enumerate(states), 4, max_run=1, progress=False,
                         companions={"cosine": 1, "angular": 2, "gaussian": 2})
    back = ScoreTable.from_dict(table.to_dict())
    for name in ("cosine", "angular", "gaussian"):
        assert np.array_equal(back.companions[name].values, table.companions[name].values, equal_nan=True)
        assert back.companions[name].settings == table.companions[name].settings
    plain = score_states(enumerate(states), 4, max_run=1, progress=False)
    assert "companions" not in plain.to_dict() and ScoreTable.from_dict(plain.to_dict()).companions == {}
    for bad, match in (({"hist": 1}, "similarity baselines"), ({"angular": 0}, "angular"),
                       ({"angular": 5}, "4 blocks"), ([("cosine", 1)], "map an estimator")):
        with pytest.raises(ValueError, match=match):
            score_states(enumerate(states), 4, max_run=1, progress=False, companions=bad)
    with pytest.raises(ValueError, match="companion table 'cosine'"):
        ScoreTable(values=np.zeros((4, 1)), estimator="hist", companions={"cosine": plain})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_pairs_in_one_sweep_equal_each_pair_bit_for_bit(monkeypatch, dtype):
    seed = secrets.randbelow(2**31)
    g = torch.Generator().manual_seed(seed)
    n, d = 50 + seed % 200, 3 + seed % 11
    states = [torch.randn(n, d, generator=g).to(dtype) for _ in range(4)]
    states[1][seed % n] = 0  # a zero row: cosine 0 with a non-zero row
    states[2][seed % n] = 0  # ... and 1 between two zero rows
    scorer = scorers.CosineScorer(angular=False, reducer=LocalReducer())
    for chunk, cache in ((1 << 25, 1 << 16), (7 * d + 3, 5 * d - 1), (d, 1)):  # one and many row chunks
        monkeypatch.setattr(scorers, "CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(scorers, "CACHE_ELEMENTS", cache)
        encoded = [scorer.encode(x) for x in states]
        swept = scorer.pairs(encoded[:3], encoded[3])
        single = torch.stack([scorer.pair(e, encoded[3]) for e in encoded[:3]])
        assert torch.equal(swept, single), (seed, chunk, cache)
        assert torch.equal(scorer.pairs(encoded[1:3], encoded[2])[1], scorer.pair(encoded[2], encoded[2]))
