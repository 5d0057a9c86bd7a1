"""pytest-benchmark suite comparing the CPU estimators, native core and float64 reference.

Run: ``PYTHONPATH=python python -m pytest benchmarks/test_bench_estimators.py --benchmark-group-by=group``
(not collected by the test suite: ``testpaths`` is ``tests``). One workload for all: a
heavy-tailed pair of 4096 tokens x 256 dimensions in float32; the groups put each
estimator's backends side by side. Each benchmark also checks the value it timed.
"""

from __future__ import annotations

import math

import pytest
import torch

from miprun import mutual_information
from support import requires_native

N, D = 4096, 256

CASES = [  # id, options, reference affordable at this size
    ("hist-pooled", dict(estimator="hist", reduction="pooled"), True),
    ("hist-per_dim", dict(estimator="hist", reduction="per_dim"), True),
    ("hist-pooled-uniform", dict(estimator="hist", reduction="pooled", binning="uniform"), True),
    ("ksg-pooled", dict(estimator="ksg", reduction="pooled", max_samples=4096), True),
    ("ksg-per_dim", dict(estimator="ksg", reduction="per_dim"), False),
    ("ksg-projection", dict(estimator="ksg", reduction="projection", max_samples=2048), True),
    ("gaussian-pooled", dict(estimator="gaussian", reduction="pooled"), True),
    ("gaussian-per_dim", dict(estimator="gaussian", reduction="per_dim"), True),
]


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scale = torch.randn(N, 3, generator=g).pow(2).sum(1, keepdim=True).div(3).rsqrt()  # t with 3 dof
    x = torch.randn(N, D, generator=g) * scale
    x[:, :2] *= 200.0  # outlier dimensions
    y = x + 0.3 * torch.tanh(x) + 0.5 * torch.randn(N, D, generator=g)
    return x, y


@requires_native
@pytest.mark.parametrize(("name", "options", "_"), CASES, ids=[c[0] for c in CASES])
def test_native(benchmark, pair, name, options, _):
    benchmark.group = name
    value = benchmark(mutual_information, *pair, backend="native", **options)
    assert math.isfinite(value) and value > 0.1


@pytest.mark.parametrize(("name", "options"), [(c[0], c[1]) for c in CASES if c[2]], ids=[c[0] for c in CASES if c[2]])
def test_reference(benchmark, pair, name, options):
    benchmark.group = name
    value = benchmark.pedantic(mutual_information, args=pair, kwargs=dict(backend="reference", **options),
                               rounds=3, iterations=1)
    assert math.isfinite(value) and value > 0.1
