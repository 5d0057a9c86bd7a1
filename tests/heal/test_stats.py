"""The least-squares sums of a cut: the map and residuals they give equal those of the tokens themselves."""

from __future__ import annotations

import pytest
import torch

from miprun.heal.options import HealOptions
from miprun.heal.stats import CutStats, relative_residual, solve


def _tokens(seed: int, n: int = 300, d: int = 7):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.rand(d, generator=g, dtype=torch.float64).add(0.2)
    r = m @ torch.randn(d, d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, d, generator=g,
                                                                                       dtype=torch.float64)
    return m, r


def _stats(m, r, full: bool, parts: int = 3) -> CutStats:
    s = CutStats(m.shape[1], full, torch.device("cpu"))
    for mm, rr in zip(m.chunk(parts), r.chunk(parts)):  # sums over several batches
        s.add(mm, rr)
    return s


@pytest.mark.parametrize("ridge", [0.0, 1e-2])
def test_full_map_is_ridge_least_squares(ridge):
    m, r = _tokens(1)
    s = _stats(m, r, full=True)
    T = solve(s, ridge)
    lam = ridge * float((m * m).sum(0).mean())
    eye = torch.eye(m.shape[1], dtype=torch.float64)
    # argmin ||m T - r||^2 + lam ||T - I||^2: shrunk towards the identity (the unhealed cut)
    expect = torch.linalg.solve(m.T @ m + lam * eye, m.T @ r + lam * eye)
    torch.testing.assert_close(T, expect, rtol=1e-10, atol=1e-12)
    direct = float(((m @ T - r) ** 2).sum() / (r ** 2).sum())
    assert relative_residual(s, T) == pytest.approx(direct, rel=1e-9)
    assert relative_residual(s, None) == pytest.approx(float(((m - r) ** 2).sum() / (r ** 2).sum()), rel=1e-9)
    assert relative_residual(s, T) < relative_residual(s, None)


def test_relative_objective_weights_each_token_by_its_target_norm():
    m, r = _tokens(5)
    y = r + torch.randn_like(r) * 3  # the target state; r = y - a
    w = 1.0 / (y * y).sum(1)
    s = CutStats(m.shape[1], True, torch.device("cpu"))
    s.add(m, r, w)
    T = solve(s, 0.0)
    sw = w.sqrt().unsqueeze(1)
    torch.testing.assert_close(T, torch.linalg.lstsq(m * sw, r * sw).solution, rtol=1e-9, atol=1e-11)
    direct = float((w * ((m @ T - r) ** 2).sum(1)).sum() / (w * (r ** 2).sum(1)).sum())
    assert relative_residual(s, T) == pytest.approx(direct, rel=1e-9)


def test_channel_scale_is_the_per_channel_least_squares():
    m, r = _tokens(2)
    s = _stats(m, r, full=False)
    t = solve(s, 0.0)
    expect = (m * r).sum(0) / (m * m).sum(0)
    torch.testing.assert_close(t, expect, rtol=1e-12, atol=0)
    direct = float(((m * t - r) ** 2).sum() / (r ** 2).sum())
    assert relative_residual(s, t) == pytest.approx(direct, rel=1e-9)


def test_a_channel_never_written_keeps_factor_one():
    m, r = _tokens(3)
    m[:, 2] = 0.0
    assert solve(_stats(m, r, full=False), 0.0)[2] == 1.0


class _Halves:
    """A reducer that adds what the other half of the tokens summed (two processes in one)."""

    def __init__(self, other: CutStats):
        self.other = other

    def all_reduce_sum(self, t):
        other = torch.cat([self.other.G.reshape(-1), self.other.C.reshape(-1), self.other.rr.reshape(1),
                           torch.tensor([float(self.other.tokens)], dtype=torch.float64)])
        return t + other


def test_reduced_halves_give_the_whole():
    m, r = _tokens(4)
    whole = _stats(m, r, full=True)
    a, b = _stats(m[:130], r[:130], full=True), _stats(m[130:], r[130:], full=True)
    a.reduce(_Halves(b))
    assert a.tokens == whole.tokens == 300
    torch.testing.assert_close(a.G, whole.G, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(solve(a, 1e-3), solve(whole, 1e-3), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [dict(heal="full"), dict(heal_fit="later"), dict(heal_ridge=-1.0), dict(heal_objective="l1"),
                                 dict(heal_ridge=float("nan")), dict(heal_ridge=True)])
def test_bad_heal_options_are_refused(bad):
    with pytest.raises(ValueError):
        HealOptions(**bad)


def test_the_auto_objective_is_relative_for_a_full_map_and_mse_for_a_scale():
    assert HealOptions(heal="linear").objective == "relative"
    assert HealOptions(heal="scale").objective == "mse"
    assert HealOptions(heal="scale", heal_objective="relative").objective == "relative"
    assert HealOptions(heal="linear", heal_objective="mse").objective == "mse"
