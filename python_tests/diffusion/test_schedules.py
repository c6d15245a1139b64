"""Schedules against closed forms; transition / bridge coefficients against Gaussian conditioning."""
import math

import numpy as np
import pytest
import torch

from gmmkernels.diffusion.schedules import VPSDE, DiscreteSchedule, make_schedule, schedule_from_spec

F64 = torch.float64


def test_linear_closed_form():
    s = DiscreteSchedule.linear(1000)
    b = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(s.betas.numpy(), b, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.abar_all[1:].numpy(), np.cumprod(1 - b), rtol=1e-12)
    assert s.abar_all[0] == 1 and s.a_all[0] == 1 and s.sigma_all[0] == 0
    a, sig = s.alpha_sigma(torch.arange(1001))
    torch.testing.assert_close(a**2 + sig**2, torch.ones(1001, dtype=F64), rtol=0, atol=1e-14)
    assert s.betas.dtype == F64 and a.dtype == F64


def test_cosine_closed_form():
    T, off = 200, 0.008
    s = DiscreteSchedule.cosine(T, s=off)
    t = np.arange(T + 1)
    f = np.cos((t / T + off) / (1 + off) * np.pi / 2) ** 2
    ab = f / f[0]
    # identical wherever beta was not clipped at max_beta (only the last step is)
    unclipped = np.nonzero(1 - ab[1:] / ab[:-1] < 0.999)[0]
    assert len(unclipped) == T - 1
    np.testing.assert_allclose(s.abar_all.numpy()[: T], ab[: T], rtol=1e-10)
    assert s.betas.max() <= 0.999


def test_sigmoid_closed_form():
    s = DiscreteSchedule.sigmoid(50, 1e-4, 0.02, span=6.0)
    x = np.linspace(-6, 6, 50)
    np.testing.assert_allclose(s.betas.numpy(), 1e-4 + (0.02 - 1e-4) / (1 + np.exp(-x)), rtol=1e-13)
    assert torch.all(s.betas[1:] > s.betas[:-1])


def test_vpsde_closed_form():
    from scipy.integrate import quad

    sde = VPSDE(0.1, 20.0)
    for t in (0.0, 0.01, 0.3, 0.77, 1.0):
        integral, _ = quad(lambda u: 0.1 + u * 19.9, 0, t)
        assert float(sde.abar(t)) == pytest.approx(math.exp(-integral), rel=1e-12)
        a, s = sde.alpha_sigma(t)
        assert float(a**2 + s**2) == pytest.approx(1.0, abs=1e-14)
    assert float(sde.beta(0.5)) == pytest.approx(0.1 + 0.5 * 19.9)


def _posterior_by_conditioning(sch, t, s):
    """q(x_s | x_t, x0) from the joint Gaussian of (x_s, x_t) given x0."""
    a_t, sig_t = (float(v) for v in sch.alpha_sigma(t))
    a_s, sig_s = (float(v) for v in sch.alpha_sigma(s))
    a_ts = a_t / a_s
    cov = a_ts * sig_s**2  # Cov(x_s, x_t | x0)
    A = cov / sig_t**2
    B = a_s - A * a_t
    lam2 = sig_s**2 - cov**2 / sig_t**2
    return A, B, lam2


@pytest.mark.parametrize("sch", [DiscreteSchedule.linear(1000), DiscreteSchedule.cosine(100), VPSDE()],
                         ids=["linear", "cosine", "vp"])
def test_posterior_matches_gaussian_conditioning(sch):
    pairs = [(1000, 999), (500, 250), (10, 0), (1, 0)] if not sch.continuous else [(1.0, 0.9), (0.5, 0.1), (0.2, 0.0)]
    if isinstance(sch, DiscreteSchedule) and sch.T == 100:
        pairs = [(100, 99), (50, 20), (3, 0)]
    for t, s in pairs:
        A, B, lam2 = (float(v) for v in sch.posterior(t, s))
        A2, B2, l2 = _posterior_by_conditioning(sch, t, s)
        assert A == pytest.approx(A2, rel=1e-10, abs=1e-14)
        assert B == pytest.approx(B2, rel=1e-10, abs=1e-14)
        assert lam2 == pytest.approx(l2, rel=1e-8, abs=1e-14)
        # the spec's formulas: B = a_s beta_{t|s} / sigma_t^2, lambda^2 = sigma_s^2 beta_{t|s} / sigma_t^2
        a_ts, beta_ts = (float(v) for v in sch.transition(t, s))
        a_s, sig_s = (float(v) for v in sch.alpha_sigma(s))
        sig_t = float(sch.alpha_sigma(t)[1])
        assert B == pytest.approx(a_s * beta_ts / sig_t**2, rel=1e-12)
        assert lam2 == pytest.approx(sig_s**2 * beta_ts / sig_t**2, rel=1e-12, abs=1e-15)


def test_single_step_posterior_is_beta_tilde():
    s = DiscreteSchedule.linear(1000)
    for t in (2, 10, 700):
        _, _, lam2 = s.posterior(t, t - 1)
        bt = (1 - s.abar_all[t - 1]) / (1 - s.abar_all[t]) * s.betas[t - 1]
        assert float(lam2) == pytest.approx(float(bt), rel=1e-12)
        assert float(s.transition(t, t - 1)[1]) == pytest.approx(float(s.betas[t - 1]), rel=1e-12)


@pytest.mark.parametrize("sch", [DiscreteSchedule.linear(1000), VPSDE()], ids=["linear", "vp"])
def test_bridge_eta1_is_markov_bridge(sch):
    triples = [(100, 400, 900), (0, 5, 10), (300, 301, 302)] if not sch.continuous else [(0.1, 0.4, 0.9), (0.0, 0.05, 0.5)]
    for s, t, ell in triples:
        cs, cl, std = (float(v) for v in sch.bridge(s, t, ell, eta=1.0))
        a_ts, b_ts = (float(v) for v in sch.transition(t, s))
        a_lt, b_lt = (float(v) for v in sch.transition(ell, t))
        a_ls, b_ls = (float(v) for v in sch.transition(ell, s))
        # x_t | x_s, x_ell from the chain x_s -> x_t -> x_ell
        cl2 = a_lt * b_ts / b_ls
        cs2 = a_ts - cl2 * a_ls
        var2 = b_ts - (a_lt * b_ts) ** 2 / b_ls
        assert cl == pytest.approx(cl2, rel=1e-9)
        assert cs == pytest.approx(cs2, rel=1e-9, abs=1e-12)
        assert std**2 == pytest.approx(var2, rel=1e-8, abs=1e-15)


def test_bridge_from_zero_is_posterior_and_ddim_eta1_is_ddpm():
    sch = DiscreteSchedule.linear(1000)
    for t, s in ((600, 300), (20, 3)):
        A, B, lam2 = (float(v) for v in sch.posterior(t, s))
        cs, cl, std = (float(v) for v in sch.bridge(0, s, t, eta=1.0))
        assert (cs, cl, std**2) == pytest.approx((B, A, lam2), rel=1e-9)
        a_s, c_eps, std = (float(v) for v in sch.ddim(t, s, eta=1.0))
        a_t, sig_t = (float(v) for v in sch.alpha_sigma(t))
        # x_s = a_s x0 + c_eps (x_t - a_t x0)/sigma_t + std z
        assert c_eps / sig_t == pytest.approx(A, rel=1e-9)
        assert a_s - c_eps * a_t / sig_t == pytest.approx(B, rel=1e-9)
        assert std**2 == pytest.approx(lam2, rel=1e-9)


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_ddim_preserves_marginals(eta):
    sch = DiscreteSchedule.cosine(1000)
    for t, s in ((999, 500), (100, 1)):
        a_s, c_eps, std = (float(v) for v in sch.ddim(t, s, eta))
        sig_s = float(sch.alpha_sigma(s)[1])
        assert c_eps**2 + std**2 == pytest.approx(sig_s**2, rel=1e-12)
    a_s, c, std = sch.ddim(500, 100, 0.0)
    assert float(std) == 0.0


def test_grids():
    sch = DiscreteSchedule.linear(1000)
    for K in (1, 7, 10, 999, 1000):
        for spacing in ("uniform", "quadratic"):
            g = sch.grid(K, spacing)
            assert g.shape == (K + 1,) and g[0] == 1000 and g[-1] == 0
            assert torch.all(g[:-1] > g[1:]) and torch.all(g == g.round())
    assert torch.equal(sch.grid(1000), torch.arange(1000, -1, -1, dtype=F64))
    g = VPSDE(t_min=1e-3).grid(50)
    assert g.shape == (51,) and g[0] == 1.0 and g[-2] == pytest.approx(1e-3) and g[-1] == 0


def test_sample_t_ranges():
    g = torch.Generator().manual_seed(0)
    t = DiscreteSchedule.linear(10).sample_t(5000, generator=g)
    assert t.min() == 1 and t.max() == 10
    u = VPSDE(t_min=0.01).sample_t(5000, generator=g)
    assert u.min() >= 0.01 and u.max() <= 1


def test_spec_roundtrip():
    for sch in (DiscreteSchedule.linear(100, 1e-4, 0.05), DiscreteSchedule.cosine(50), DiscreteSchedule.sigmoid(30),
                VPSDE(0.2, 10.0), DiscreteSchedule(torch.full((5,), 0.1))):
        sch2 = schedule_from_spec(sch.spec())
        t = torch.tensor([0.0, 1.0]) if not sch.continuous else torch.tensor([0.0, 0.5, 1.0])
        torch.testing.assert_close(sch.abar(t), sch2.abar(t), rtol=0, atol=0)


@pytest.mark.parametrize("fn, match", [
    (lambda: DiscreteSchedule.linear(0), "T must be a positive int"),
    (lambda: DiscreteSchedule.linear(10.5), "T must be a positive int"),
    (lambda: DiscreteSchedule.linear(10, 0.1, 1.5), "beta_start <= beta_end < 1"),
    (lambda: DiscreteSchedule(torch.tensor([0.1, 1.0])), r"every beta must lie in \(0, 1\)"),
    (lambda: make_schedule("quadratic"), "unknown schedule"),
    (lambda: VPSDE(-1.0), "beta_min"),
    (lambda: DiscreteSchedule.linear(10).grid(11), r"K must be an int in \[1, T=10\]"),
    (lambda: DiscreteSchedule.linear(10).grid(5, "log"), "spacing"),
    (lambda: DiscreteSchedule.linear(10).posterior(3, 5), "need s < t"),
    (lambda: DiscreteSchedule.linear(10).abar(11), "integers in"),
    (lambda: DiscreteSchedule.linear(10).abar(2.5), "integers in"),
    (lambda: DiscreteSchedule.linear(10).bridge(1, 2, 3, eta=1.5), "eta"),
    (lambda: DiscreteSchedule.linear(10).bridge(1, 4, 3), "s < t < ell"),
    (lambda: VPSDE().abar(1.5), r"\[0, 1\]"),
])
def test_bad_configs(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


def test_sigmoid_abar_and_linear_rescaled():
    """The two schedules of SMD's settings: a sigmoid in abar, and linear betas rescaled by 1000 / T."""
    for T in (10, 50, 1000):
        sch = DiscreteSchedule.sigmoid_abar(T)
        ab = sch.abar_all
        assert ab[0] == 1 and bool((ab[1:] < ab[:-1]).all()) and ab[-1] < 1e-2
        lin = DiscreteSchedule.linear_rescaled(T)
        assert lin.abar_all[-1] < 1e-2
    lin = DiscreteSchedule.linear_rescaled(1000)
    torch.testing.assert_close(lin.betas[[0, -1]], torch.tensor([1e-4, 0.02], dtype=torch.float64))
