"""Kraskov–Stögbauer–Grassberger (KSG) mutual information, estimator 1.

``I = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >`` where ``eps_i`` is the distance
from point ``i`` to its ``k``-th nearest neighbour in the joint space, the larger of its
distances in x and in y, and ``n_x(i)`` counts the points ``j != i`` with
``||x_i - x_j|| < eps_i`` (strictly). Within x and within y the norm is the max-norm
(``metric="chebyshev"``) or the Euclidean norm (``metric="euclidean"``).

Euclidean distances are compared squared: a squared distance is the sum of the squared
differences added one coordinate after another, in column order, and ``n_x(i)`` counts the
``j`` whose squared distance in x is below ``eps_i^2``, the larger of the two squared
distances to the ``k``-th neighbour. In exact arithmetic that is the same count; in
floating point it keeps the rounding of a square root out of every comparison, and the
fixed order of the sum lets the native core and the kernels reproduce every key exactly.
With one column in each space the two norms are the same distance, computed as the
max-norm (as the scalar paths do).

Before estimating, each variable is scaled to unit standard deviation and a tiny
seeded jitter (``1e-10 * max(1, mean|x|)``) is added to break ties, as scikit-learn does.

References
----------
Kraskov, Stögbauer, Grassberger (2004). Estimating mutual information. Phys. Rev. E 69.
"""

from __future__ import annotations

import torch

from miprun.mi import cpu
from miprun.mi.backend import resolve_backend

DEFAULT_POOLED_SAMPLES = 20_000  # element pairs drawn for reduction="pooled"
DEFAULT_PROJECTION_SAMPLES = 4_096  # tokens drawn for reduction="projection"
DEFAULT_PROJECTION_DIM = 4
METRICS = ("chebyshev", "euclidean")
# the norm within x and within y when none is asked for, by reduction: reduction="joint"
# measures as BMI's KSG does (Euclidean), which is closer to the truth on BMI's tasks
# (benchmarks/RESULTS.md); "projection" keeps the max-norm its score tables were made with;
# "pooled" and "per_dim" are scalar pairs, where the two are the same
DEFAULT_METRICS = {"pooled": "chebyshev", "per_dim": "chebyshev", "projection": "chebyshev", "joint": "euclidean"}


def check_metric(metric: str) -> str:
    """``metric`` if it names a KSG norm, else a ValueError naming the choices."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def resolve_metric(metric: str | None, reduction: str) -> str:
    """The KSG norm within x and within y: ``metric`` itself (checked), or the reduction's default when None."""
    return DEFAULT_METRICS.get(reduction, "chebyshev") if metric is None else check_metric(metric)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def standardize_jitter(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Scale each column of ``x: (n, d)`` to unit std (float64) and add the seeded tie-breaking jitter."""
    x = x.to(torch.float64)
    std = x.std(0, unbiased=False, keepdim=True)
    x = x / torch.where(std > 0, std, torch.ones_like(std))
    noise = torch.randn(x.shape, generator=_generator(seed, x.device), dtype=torch.float64, device=x.device)
    amp = 1e-10 * torch.clamp(x.abs().mean(0, keepdim=True), min=1.0)
    return x + amp * noise


def subsample_rows(n: int, m: int | None, seed: int, device) -> torch.Tensor | None:
    """Indices of a seeded sample of ``m`` of ``n`` rows without replacement; None for all rows."""
    if m is None or m >= n:
        return None
    perm = torch.randperm(n, generator=_generator(seed, torch.device("cpu")))
    return perm[:m].sort().values.to(device)


def random_projection(d: int, p: int, seed: int, device) -> torch.Tensor:
    """Gaussian projection matrix ``(d, p)`` scaled by ``1/sqrt(d)``, seeded."""
    g = _generator(seed, torch.device("cpu"))
    return (torch.randn(d, p, generator=g, dtype=torch.float64) / d ** 0.5).to(device)


def prepare(x: torch.Tensor, y: torch.Tensor, *, reduction: str, max_samples: int | None,
            seed: int, projection_dim: int = DEFAULT_PROJECTION_DIM) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ``x, y: (n, d)`` into the float64 point sets the KSG core works on.

    ``pooled``: ``(m, 1)`` each, a seeded sample of ``m = max_samples`` element pairs.
    ``per_dim``: ``(n', d)``, rows optionally subsampled; column ``j`` is one scalar pair.
    ``projection``: ``(n', p)``, both projected by one seeded Gaussian matrix.
    ``joint``: ``(n', dx)`` and ``(n', dy)``, every column kept (rows subsampled only when
    ``max_samples`` asks), for KSG on the joint space of ``x`` and ``y``.
    Each output column is standardised and jittered.
    """
    dev = x.device
    if reduction == "pooled":
        xf, yf = x.reshape(-1), y.reshape(-1)
        idx = subsample_rows(xf.shape[0], max_samples if max_samples is not None else DEFAULT_POOLED_SAMPLES, seed, dev)
        if idx is not None:
            xf, yf = xf[idx], yf[idx]
        xs, ys = xf[:, None], yf[:, None]
    elif reduction == "per_dim":
        idx = subsample_rows(x.shape[0], max_samples, seed, dev)
        xs, ys = (x, y) if idx is None else (x[idx], y[idx])
    elif reduction == "projection":
        idx = subsample_rows(x.shape[0], max_samples if max_samples is not None else DEFAULT_PROJECTION_SAMPLES, seed, dev)
        xs, ys = (x, y) if idx is None else (x[idx], y[idx])
        proj = random_projection(x.shape[1], projection_dim, seed, dev)
        xs = xs.to(torch.float64) @ proj
        ys = ys.to(torch.float64) @ proj
    elif reduction == "joint":
        idx = subsample_rows(x.shape[0], max_samples, seed, dev)
        xs, ys = (x, y) if idx is None else (x[idx], y[idx])
    else:
        raise ValueError(f"ksg supports reduction 'pooled', 'per_dim', 'projection' or 'joint', got {reduction!r}")
    return standardize_jitter(xs, seed + 1), standardize_jitter(ys, seed + 2)


def keys_ref(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 keys ``(c, m)`` from the points ``a: (c, d)`` to ``b: (m, d)``: what KSG compares.

    ``chebyshev``: the max-norm distance. ``euclidean``: the squared distance
    ``((a_0 - b_0)^2 + (a_1 - b_1)^2) + ...``, added in column order, one elementwise
    operation at a time (no fused multiply-add, no reordered sum), as the native core and
    the kernels add them.
    """
    if check_metric(metric) == "chebyshev":
        return torch.cdist(a, b, p=float("inf"))  # exact: differences, absolute values, maxima
    s = torch.zeros((a.shape[0], b.shape[0]), dtype=torch.float64, device=a.device)
    for t in range(a.shape[1]):
        d = a[:, t, None] - b[None, :, t]
        s = s + d * d
    return s


def ksg_points_ref(x: torch.Tensor, y: torch.Tensor, k: int, chunk: int = 1024, *, metric: str = "chebyshev") -> float:
    """KSG estimator 1 on point sets ``x: (m, dx)``, ``y: (m, dy)`` (float64, O(m) memory per chunk).

    ``metric``: the norm within x and within y (see the module docstring).
    """
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    if check_metric(metric) == "euclidean" and x.shape[1] == 1 and y.shape[1] == 1:
        metric = "chebyshev"  # one column each: the same distance, computed as the scalar paths do
    m = x.shape[0]
    if m < k + 1:
        raise ValueError(f"KSG with k={k} needs at least {k + 1} samples, got {m}")
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for a in range(0, m, chunk):
        xa, ya = x[a:a + chunk], y[a:a + chunk]
        dx = keys_ref(xa, x, metric)  # (c, m): distances, or squared distances
        dy = keys_ref(ya, y, metric)
        dz = torch.maximum(dx, dy)
        rows = torch.arange(xa.shape[0], device=x.device)
        dz[rows, rows + a] = float("inf")  # exclude the point itself
        eps = torch.kthvalue(dz, k, dim=1).values  # (c,): the k-th neighbour's key, eps or eps^2
        nx = (dx < eps[:, None]).sum(1) - 1  # self has key 0 < eps
        ny = (dy < eps[:, None]).sum(1) - 1
        total = total + (torch.special.digamma((nx + 1).to(torch.float64)) +
                         torch.special.digamma((ny + 1).to(torch.float64))).sum()
    kk = torch.tensor(float(k), dtype=torch.float64)
    mm = torch.tensor(float(m), dtype=torch.float64)
    return float(torch.special.digamma(kk) + torch.special.digamma(mm) - total / m)


def ksg_prepared(xs: torch.Tensor, ys: torch.Tensor, k: int, *, per_dim: bool, backend: str = "auto",
                 metric: str = "chebyshev") -> float:
    """KSG MI in nats of prepared point sets (:func:`prepare`), clipped at 0, on the backend for their device.

    ``per_dim``: the mean over columns of the scalar MI of column ``j`` of ``xs`` and of ``ys``
    (scalar pairs: ``metric`` makes no difference there). ``metric``: the norm within x and
    within y.
    """
    if xs.shape[0] < k + 1:
        raise ValueError(f"KSG with k={k} needs at least {k + 1} samples, got {xs.shape[0]}")
    metric = check_metric(metric)
    be = resolve_backend(backend, xs.device)
    if be == "native":
        raw = cpu.ksg_per_dim_cpu(xs, ys, k) if per_dim else cpu.ksg_points_cpu(xs, ys, k, metric=metric)
    elif be == "triton":
        from miprun.kernels import knn  # triton is optional: loaded only when a kernel runs
        raw = knn.ksg_per_dim_triton(xs, ys, k) if per_dim else knn.ksg_points_triton(xs, ys, k, metric=metric)
    elif per_dim:
        raw = sum(ksg_points_ref(xs[:, j:j + 1], ys[:, j:j + 1], k) for j in range(xs.shape[1])) / xs.shape[1]
    else:
        raw = ksg_points_ref(xs, ys, k, metric=metric)
    return max(0.0, float(raw))


def ksg_ref(x: torch.Tensor, y: torch.Tensor, *, k: int = 3, reduction: str = "pooled",
            max_samples: int | None = None, seed: int = 0,
            projection_dim: int = DEFAULT_PROJECTION_DIM, metric: str | None = None) -> float:
    """Reference KSG MI in nats of ``x: (n, dx)``, ``y: (n, dy)``; negative estimates are clipped to 0.

    ``dx == dy`` except for ``reduction="joint"``, the MI of ``x`` and ``y`` as random
    vectors: exact neighbours over all ``dx + dy`` columns. ``metric``: the norm within x
    and within y, ``"chebyshev"`` or ``"euclidean"``; None: the reduction's default
    (:data:`DEFAULT_METRICS`: Euclidean for ``joint``, the max-norm otherwise).
    """
    metric = resolve_metric(metric, reduction)
    xs, ys = prepare(x, y, reduction=reduction, max_samples=max_samples, seed=seed, projection_dim=projection_dim)
    return ksg_prepared(xs, ys, k, per_dim=reduction == "per_dim", backend="reference", metric=metric)
