"""Agreement with scikit-learn on identical data.

``ksg`` against ``sklearn.feature_selection.mutual_info_regression``: both scale each
variable to unit standard deviation, add a 1e-10 relative jitter and run KSG-1 with
strict neighbour counts, so they differ only through the jitter's random draws. A draw can
only matter where two distances tie to 1e-10, which moves one count by one and the
estimate by less than 1/m; the tolerance allows a few such flips (observed: < 1e-13).

``hist`` against ``sklearn.metrics.mutual_info_score`` on the same bin codes: both are
the plug-in MI of one contingency table, equal up to float64 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.feature_selection import mutual_info_regression
from sklearn.metrics import mutual_info_score

from miprun import mutual_information
from miprun.mi import codes as C
from support import requires_native

BACKENDS = ["reference", pytest.param("native", marks=requires_native)]


def dependent_pair(n: int, seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    if kind == "linear":
        y = 0.8 * x + 0.6 * rng.standard_normal(n)
    elif kind == "nonlinear":
        y = np.sin(2 * x) + 0.3 * rng.standard_t(3, n)
    else:  # heavy-tailed and scaled far from 1
        x = 1e3 * rng.standard_t(2, n)
        y = x + 500.0 * rng.standard_t(2, n)
    return x, y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["linear", "nonlinear", "heavy"])
@pytest.mark.parametrize("k", [3, 5])
def test_ksg_agrees_with_mutual_info_regression(backend, kind, k):
    m = 1500
    x, y = dependent_pair(m, seed=k, kind=kind)
    ours = mutual_information(x, y, estimator="ksg", k=k, seed=1, max_samples=m, backend=backend)
    theirs = float(mutual_info_regression(x[:, None], y, n_neighbors=k, random_state=0)[0])
    assert theirs > 0.1  # clipping at 0 would hide disagreements
    assert ours == pytest.approx(theirs, abs=3.0 / m)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("binning", ["quantile", "uniform"])
@pytest.mark.parametrize("bins", [2, 10, 64])
@pytest.mark.parametrize("per_dim", [False, True])
def test_hist_agrees_with_mutual_info_score(backend, binning, bins, per_dim):
    g = torch.Generator().manual_seed(bins)
    x = torch.randn(3000, 4, generator=g, dtype=torch.float64)
    y = torch.tanh(x) + 0.5 * torch.randn(3000, 4, generator=g, dtype=torch.float64)
    cx = C.bin_codes(x, bins=bins, binning=binning, per_dim=per_dim, backend=backend)
    cy = C.bin_codes(y, bins=bins, binning=binning, per_dim=per_dim, backend=backend)
    if per_dim:
        theirs = float(np.mean([mutual_info_score(cx[:, j].numpy(), cy[:, j].numpy()) for j in range(4)]))
    else:
        theirs = mutual_info_score(cx.reshape(-1).numpy(), cy.reshape(-1).numpy())
    ours = mutual_information(x, y, estimator="hist", bins=bins, binning=binning,
                              reduction="per_dim" if per_dim else "pooled", backend=backend)
    assert theirs > 0.01
    assert ours == pytest.approx(theirs, abs=1e-10)
    counts = C.joint_counts(cx, cy, bins=bins, per_dim=per_dim, backend=backend)
    assert C.mi_from_counts(counts) == pytest.approx(theirs, abs=1e-10)
