"""MGDM (gmmkernels.diffusion.methods.mgdm): the fused and eager Gauss_VI formulations, determinism, the bridge
coefficients, and the exact toy (MGDM vs DPS at equal network calls). The fused ops themselves are tested in
python_tests/ops/test_mgdm_step.py."""
import math

import pytest
import torch

import gmmkernels  # noqa: F401
from gmmkernels import _backend
from gmmkernels.diffusion.experiments import mgdm as MX
from gmmkernels.diffusion.methods import mgdm as M

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_ops = pytest.mark.skipif(not _backend.has_kernel("mgdm_vi_step", "CPU"), reason="native mgdm ops not built")


def test_bridge_coefficients_match_schedule_formula():
    acp = MX.toy_acp()
    dif = M._Diffusion(lambda x, t: x, acp, "fixed", M.CallCounter(), torch.float64, "cpu")
    cs, cl, std = dif.bridge(10, 50, 90)
    a = dif.acp
    # x_t | x_s, x_ell has the right marginal: if x_s ~ q_s and x_ell ~ q_{ell|s}, x_t has variance 1 - abar_t given x_0 = 0
    var_t = cs**2 * (1 - a[10]) + cl**2 * (1 - a[90]) + 2 * cs * cl * math.sqrt(a[90] / a[10]) * (1 - a[10]) + std**2
    assert abs(float(var_t) - float(1 - a[50])) < 1e-10
    assert abs(cs + cl * math.sqrt(a[90] / a[10]) - math.sqrt(a[50] / a[10])) < 1e-12


def test_time_index_flag():
    seen = []
    net = lambda x, t: (seen.append(t), torch.zeros_like(x))[1]  # noqa: E731
    for ti, want in (("fixed", 41), ("official", 42)):
        seen.clear()
        dif = M._Diffusion(net, MX.toy_acp(), ti, M.CallCounter(), torch.float64, "cpu")
        dif.denoise(torch.zeros(1, 2), 42)
        assert seen == [want]
    with pytest.raises(ValueError, match="time_index"):
        M._Diffusion(net, MX.toy_acp(), "other", M.CallCounter(), torch.float64, "cpu")


@needs_ops
def test_mgdm_same_seed_same_samples_and_observation_plugins():
    prior, obs, _ = MX.toy_problem(4, seed=1)
    acp = MX.toy_acp()
    net = MX.exact_eps_net(prior, acp)
    ob = M.LinearObservation(obs.A, obs.y.expand(8, -1), obs.sigma_y)
    cfg = M.MGDMConfig(K=8, M=3, lr=lambda i: 1.0)
    a = M.mgdm(net, acp, ob.log_pot, (8, 4), cfg, seed=3, dtype=torch.float64)
    b = M.mgdm(net, acp, ob.log_pot, (8, 4), cfg, seed=3, dtype=torch.float64)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    x = torch.randn(2, 1, 6, 6)
    for o in (M.Inpainting(torch.ones(1, 1, 6, 6)), M.Blur(M.gaussian_kernel(3, 1.0)), M.PhaseObservation(torch.randn(5, 36))):
        o.y = o.forward(x)
        assert torch.allclose(o.log_pot(x), torch.zeros(2), atol=1e-6)
        assert o.log_pot(x + 0.1).shape == (2,)


@pytest.mark.parametrize("fused", [False, pytest.param(True, marks=needs_ops)])
def test_gauss_vi_reaches_the_exact_conditional_mean_at_the_data_scale(fused):
    # Gaussian prior N(mu0, 10^2 I) => D_s is affine and x_s | x_0, x_t is Gaussian; mean-field Gaussian VI has the exact
    # mean there. The image learning rate (0.03) only gets there when Gauss_VI runs at the data's scale (vi_scale).
    from gmmkernels.mixture import GaussianMixture

    D, B, scale, s, t = 6, 256, 10.0, 100, 300
    g = torch.Generator().manual_seed(0)
    mu0 = torch.randn(1, D, generator=g, dtype=torch.float64) * scale
    prior = GaussianMixture(torch.zeros(1, dtype=torch.float64), mu0, torch.full((1,), scale, dtype=torch.float64), "spherical")
    acp = MX.toy_acp()
    A = torch.randn(1, D, generator=g, dtype=torch.float64)
    y = (A[0] @ mu0[0] + 10.0 * scale * A.norm()).reshape(1, 1)
    ob = M.LinearObservation(A, y.expand(B, -1), 1.0)
    x0 = (mu0 + scale * torch.randn(1, D, generator=g, dtype=torch.float64)).expand(B, -1)
    dif = M._Diffusion(MX.exact_eps_net(prior, acp), acp, "fixed", M.CallCounter(), torch.float64, "cpu")
    xt = math.sqrt(dif.acp[t]) * x0 + math.sqrt(1 - dif.acp[t]) * torch.randn(1, D, generator=g, dtype=torch.float64).expand(B, -1)
    c0, ct, sig = dif.bridge(0, s, t, 1.0)
    m = ct * xt[0] + c0 * x0[0]
    a = float(dif.acp[s])
    b1 = math.sqrt(a) * scale**2 / (a * scale**2 + 1 - a)  # D_s(x) = b0 + b1 x
    b0 = mu0[0] - b1 * math.sqrt(a) * mu0[0]
    P = torch.eye(D, dtype=torch.float64) / sig**2 + b1**2 * A.T @ A
    want = torch.linalg.solve(P, m / sig**2 + b1 * (y[0, 0] - A[0] @ b0) * A[0])
    move = float((want - m).norm())
    errs = {}
    for c in (1.0, scale):
        noise = M._Noise(fused, 5, torch.Generator().manual_seed(1))
        xs = M._gauss_vi(dif, noise, ob.log_pot, x0, xt, s, t, 60, 0.03, (0.9, 0.999, 1e-8), fused, c)
        errs[c] = float((xs.mean(0) - want).norm())
    assert move > 10
    assert errs[scale] < 0.1 * move, (errs, move)
    assert errs[1.0] > 0.5 * move, (errs, move)  # Adam moves ~lr per step: 60 steps of 0.03 cannot cover the distance


@needs_ops
def test_mgdm_toy_beats_dps_at_equal_calls():
    # three fixed gmm_25(10) problems with one random measurement (sigma_y 0.1): sliced W1 to exact-posterior samples.
    # MGDM: toy_config (paper settings + Gauss_VI at the toy's scale); DPS: zeta 1 with as many network evaluations,
    # capped at 999 steps (its grid cannot repeat times). Measured (n=200, K=100, ~3600 MGDM calls, 1998 DPS calls):
    # MGDM 2.30 / 0.13 / 0.33 vs DPS 4.86 / 0.41 / 4.49; exact-vs-exact 0.49 / 0.12 / 0.24.
    rs = [MX.run_toy(10, n=200, seed=seed, R=1, K=100) for seed in (0, 1, 2)]
    for r in rs:
        assert r["dps_calls"] == 2 * min(r["mgdm_calls"] // 2, 999), r
    sw_m = sum(r["sw_mgdm"] for r in rs) / 3
    sw_d = sum(r["sw_dps"] for r in rs) / 3
    assert sw_m + 1.0 < sw_d, rs
    assert sum(r["sw_mgdm"] < r["sw_dps"] for r in rs) >= 2, rs
    assert all(r["sw_mgdm"] < 0.5 * r["sw_prior_vs_exact"] for r in rs), rs  # it conditions on y at all


# ---------------------------------------------------------------------------------------------------------
# the controls and the pairing of the reproduction


def test_dps_gamma_is_half_the_step_on_the_residual_norm():
    """Algorithm 1's (gamma / ||r||) grad ||r||^2 = 2 gamma grad ||r||: gamma and zeta = 2 gamma give the same samples,
    and the same seed gives the same x_T and step noise (gamma = 0 twice)."""
    _, obs, _ = MX.toy_problem(4, seed=0)
    prior = MX.toy_problem(4, seed=0)[0]
    acp = MX.toy_acp(200)
    net = MX.exact_eps_net(prior, acp)
    ob = M.LinearObservation(obs.A, obs.y.expand(16, -1), obs.sigma_y)
    run = lambda **kw: M.dps(net, acp, ob, (16, 4), steps=40, seed=3, dtype=torch.float64, **kw)  # noqa: E731
    assert M.dps_zeta(0.25) == 0.5
    torch.testing.assert_close(run(gamma=0.25), run(zeta=0.5), rtol=0, atol=0)
    assert not torch.allclose(run(gamma=0.25), run(gamma=0.5))
    assert torch.equal(run(zeta=0.0), run(gamma=0.0))


def test_lr_mult_scales_every_gauss_vi_rate_and_one_is_the_default():
    base = M.MGDMConfig()
    two = M.MGDMConfig(lr_mult=2.0)
    assert all(two.learning_rate(i) == 2 * base.learning_rate(i) for i in (1, 10, 11, 80))
    custom = M.MGDMConfig(lr=lambda i: 0.1 * i, lr_mult=0.5)
    assert custom.learning_rate(4) == pytest.approx(0.2)
    a = MX.toy_mgdm(6, 24, 0, K=8, sampler_seed=1)
    b = MX.toy_mgdm(6, 24, 0, K=8, sampler_seed=1, lr_mult=1.0)
    c = MX.toy_mgdm(6, 24, 0, K=8, sampler_seed=1, lr_mult=4.0)
    assert a["sw"] == b["sw"] and a["sw"] != c["sw"]


def test_dps_gets_mgdm_calls_and_the_digits_tasks_share_the_observation():
    c = MX._toy_case(6, 24, 0)
    cfg = MX.toy_config(c["prior"], K=8)
    calls = MX._mgdm_calls(cfg, c["acp"], 0)
    assert calls == MX.toy_mgdm(6, 24, 0, K=8, sampler_seed=0)["calls"]
    assert MX.dps_steps_for(calls) == min(calls // 2, 999)
    d = MX.toy_dps(6, 24, 0, steps=MX.dps_steps_for(calls), gamma=0.5)
    assert abs(d["calls"] - calls) <= 1
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    for task in MX.TASKS:
        assert torch.equal(MX._task(task, x, 4).y, MX._task(task, x, 4).y)
    half = MX._task("inpaint_right_half", x, 4)
    assert float(half.mask[..., 4:].abs().sum()) == 0 and float(half.mask[..., :4].sum()) == 32
