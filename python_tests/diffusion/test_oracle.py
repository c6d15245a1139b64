"""The exact mixture oracle: closed forms on a Gaussian, consistency of its heads, the tower property of its
conditional moments, mixed times and image shapes, bad inputs."""
import math

import pytest
import torch

from gmmkernels import GaussianMixture
from gmmkernels.diffusion import MixtureOracle
from gmmkernels.diffusion.data import gmm1d, gmm2d
from gmmkernels.diffusion.schedules import DiscreteSchedule

F64 = torch.float64
LIN = DiscreteSchedule.linear(1000)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: intra-op threads only add overhead


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_oracle_single_gaussian_closed_form():
    mu, v = torch.tensor([[0.5, -1.0]], dtype=F64), torch.tensor([[0.3, 2.0]], dtype=F64)
    orc = MixtureOracle(GaussianMixture(torch.zeros(1, dtype=F64), mu, v.sqrt()), LIN)
    x = torch.randn(7, 2, dtype=F64)
    t = 400
    a, s = (float(u) for u in LIN.alpha_sigma(t))
    m = mu + a * v * (x - a * mu) / (s**2 + a**2 * v)
    s2 = v * s**2 / (s**2 + a**2 * v)
    E1, E2, E3 = orc.x0_moments(x, t)
    torch.testing.assert_close(E1, m)
    torch.testing.assert_close(E2, m**2 + s2)
    torch.testing.assert_close(E3, m**3 + 3 * m * s2)
    eps_closed = (x - a * mu) * s / (s**2 + a**2 * v)  # E[eps | x_t] for a Gaussian
    torch.testing.assert_close(orc(x, torch.full((7,), float(t))), eps_closed)
    torch.testing.assert_close(orc.posterior_mean(x, t), m)
    torch.testing.assert_close(orc.score(x, t), -(x - a * mu) / (s**2 + a**2 * v))


def test_oracle_heads_consistent_with_fused_eps():
    mix = gmm2d()
    orc = MixtureOracle(mix, LIN)
    x = 2 * torch.randn(50, 2, dtype=F64)
    for t in (1, 50, 500, 1000):
        h = orc(x, t, heads=True)
        torch.testing.assert_close(h["eps"], orc(x, t), rtol=1e-9, atol=1e-9)  # moments route vs Tweedie/score route
        assert torch.all(h["eps2"] >= h["eps"] ** 2 - 1e-9)  # Jensen


def test_oracle_moments_tower_property():
    """E over (x0, eps) of the exact conditional moments equals the unconditional ones."""
    mix = gmm1d()
    orc = MixtureOracle(mix, LIN)
    n = 40000
    g = _gen(1)
    x0 = mix.sample(n, generator=g)
    eps = torch.randn(n, 1, generator=g, dtype=F64)
    for t in (100, 600):
        a, s = (float(u) for u in LIN.alpha_sigma(t))
        h = orc(a * x0 + s * eps, t, heads=True)
        for name, target, e_true in (("eps", 0.0, eps), ("eps2", 1.0, eps**2), ("eps3", 0.0, eps**3)):
            se = float(e_true.std()) / math.sqrt(n)
            assert abs(float(h[name].mean()) - target) < 4 * se + 1e-3, name
        E1, E2, E3 = orc.x0_moments(a * x0 + s * eps, t)
        for En, p in ((E1, 1), (E2, 2), (E3, 3)):
            se = float((x0**p).std()) / math.sqrt(n)
            assert abs(float(En.mean() - (x0**p).mean())) < 4 * se


def test_oracle_mixed_times_and_images():
    mix = GaussianMixture(torch.zeros(3, dtype=F64), torch.randn(3, 16, dtype=F64), 0.5 * torch.ones(3, 16, dtype=F64))
    orc = MixtureOracle(mix, LIN, data_shape=(1, 4, 4))
    x = torch.randn(6, 1, 4, 4)
    t = torch.tensor([10.0, 500, 10, 999, 500, 10])
    out = orc(x, t, heads=True)
    for i in range(6):
        one = orc(x[i:i + 1], t[i:i + 1], heads=True)
        for k in out:
            torch.testing.assert_close(out[k][i:i + 1], one[k])
    assert out["eps"].dtype == torch.float32 and out["eps"].shape == x.shape


def test_oracle_errors():
    orc = MixtureOracle(gmm2d(), LIN)
    with pytest.raises(ValueError, match="sigma_t = 0"):
        orc(torch.zeros(2, 2), 0)
    with pytest.raises(ValueError, match="unconditional"):
        orc(torch.zeros(2, 2), 5, cond=torch.zeros(2))
    with pytest.raises(ValueError, match=r"x must be \[N, 2\]"):
        orc(torch.zeros(2, 3), 5)
    with pytest.raises(ValueError, match="data_shape"):
        MixtureOracle(gmm2d(), LIN, data_shape=(3,))
