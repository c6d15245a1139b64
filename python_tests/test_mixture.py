"""GaussianMixture: sampling, the noised law and the exact diffusion quantities."""
import math

import pytest
import torch

import gmmkernels
from gmmkernels import GaussianMixture

from _cases import make_mixture


@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_sample_moments(cov):
    _, logits, means, scale = make_mixture(cov, (), 1, 3, 2, seed=1)
    m = GaussianMixture(logits, means, scale, cov)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    s = m.sample(n, generator=g)
    assert s.shape == (n, 2)
    mean = m.mean()
    cov_true = (m.weights[:, None, None] * (m.covariance() + (means - mean)[:, :, None] * (means - mean)[:, None, :])).sum(0)
    se = (torch.diagonal(cov_true) / n).sqrt()
    assert ((s.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(s.T), cov_true, rtol=0.03, atol=0.03)


def test_sample_is_seeded_and_batched():
    _, logits, means, scale = make_mixture("diag", (4,), 1, 3, 2, seed=2)
    m = GaussianMixture(logits, means, scale)
    a = m.sample(10, generator=torch.Generator().manual_seed(5))
    b = m.sample(10, generator=torch.Generator().manual_seed(5))
    assert a.shape == (4, 10, 2)
    torch.testing.assert_close(a, b)
    assert m.sample(0).shape == (4, 0, 2)
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        m.sample(-1)


@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_noised_law_matches_monte_carlo(cov):
    _, logits, means, scale = make_mixture(cov, (), 1, 3, 2, seed=3)
    m = GaussianMixture(logits, means, scale, cov)
    a, s = 0.6, 0.8
    g = torch.Generator().manual_seed(1)
    x0 = m.sample(100_000, generator=g)
    xt = a * x0 + s * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    nm = m.noised(a, s)
    torch.testing.assert_close(xt.mean(0), nm.mean(), rtol=0, atol=0.02)
    # the density integrates to one over a grid and matches a histogram of x_t (coarsely)
    lin = torch.linspace(-6, 6, 241, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(lin, lin, indexing="ij"), -1).reshape(-1, 2)
    mass = nm.log_prob(grid).exp().sum() * (lin[1] - lin[0]) ** 2
    assert abs(float(mass) - 1) < 1e-3


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_tweedie_posterior_mean_is_exact(cov):
    """E[x0 | x_t] from Tweedie equals the mixture-of-posteriors mean, and a Monte Carlo estimate."""
    _, logits, means, scale = make_mixture(cov, (), 1, 4, 2, seed=4)
    m = GaussianMixture(logits, means, scale, cov)
    a, s = 0.7, math.sqrt(1 - 0.49)
    xt = torch.randn(6, 2, dtype=torch.float64)
    pm = m.posterior_mean(xt, a, s)
    if cov == "diag":
        r, mu, _ = m.posterior_components(xt, a, s)
        torch.testing.assert_close(pm, (r[..., None] * mu).sum(-2))
    # Monte Carlo: importance weights of x0 ~ prior by the likelihood N(x_t; a x0, s^2)
    x0 = m.sample(400_000, generator=torch.Generator().manual_seed(2))
    logw = -((xt[:, None, :] - a * x0[None]) ** 2).sum(-1) / (2 * s**2)
    w = torch.softmax(logw, -1)
    torch.testing.assert_close(pm, w @ x0, rtol=0, atol=0.03)
    # the exact eps prediction is consistent with x_t = a E[x0|x_t] + s E[eps|x_t]
    torch.testing.assert_close(a * pm + s * m.eps(xt, a, s), xt)


def test_posterior_components_moments():
    _, logits, means, scale = make_mixture("diag", (), 1, 3, 1, seed=5)
    m = GaussianMixture(logits, means, scale)
    a, s = 0.5, math.sqrt(0.75)
    xt = torch.tensor([[0.3]], dtype=torch.float64)
    r, mu, var = m.posterior_components(xt, a, s)
    x0 = m.sample(1_000_000, generator=torch.Generator().manual_seed(3))
    w = torch.softmax(-((xt - a * x0) ** 2).squeeze(-1) / (2 * s**2), 0)
    for p in (1, 2, 3):
        exact = {1: mu, 2: mu**2 + var, 3: mu**3 + 3 * mu * var}[p]
        exact = (r[..., None] * exact).sum(-2)
        mc = (w[:, None] * x0**p).sum(0)
        torch.testing.assert_close(exact[0], mc, rtol=0, atol=0.02)


def test_learnable_mixture_fits_by_gradient():
    torch.manual_seed(0)
    target = GaussianMixture(torch.zeros(2, dtype=torch.float64), torch.tensor([[-2.0], [2.0]], dtype=torch.float64),
                             torch.tensor([[0.5], [0.5]], dtype=torch.float64))
    data = target.sample(4000, generator=torch.Generator().manual_seed(1))
    m = GaussianMixture(torch.zeros(2, dtype=torch.float64), torch.tensor([[-0.5], [0.5]], dtype=torch.float64),
                        torch.ones(2, 1, dtype=torch.float64), learnable=True)
    assert len(list(m.parameters())) == 3
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = -m.log_prob(data).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            m.scale.clamp_(min=1e-3)
    torch.testing.assert_close(m.means.detach().sort(0).values, target.means, rtol=0, atol=0.08)


def test_bad_construction():
    _, logits, means, scale = make_mixture("diag", (), 1, 3, 2, seed=6)
    with pytest.raises(ValueError, match="GaussianMixture: argument 'scale'"):
        GaussianMixture(logits, means, scale[:, :1])
    with pytest.raises(ValueError, match="GaussianMixture: argument 'cov_type'"):
        GaussianMixture(logits, means, scale, "tied")
    with pytest.raises(ValueError, match="must be positive"):
        GaussianMixture(logits, means, -scale)
    m = GaussianMixture(logits, means, scale)
    with pytest.raises(ValueError, match="'alpha' must be a scalar or broadcast"):
        m.noised(torch.ones(2, 2), 0.5)
    assert "K=3, D=2" in repr(m)
