"""Gibbs sampling of the conjugate diagonal Bayesian GMM (gmmkernels.fit.gibbs): exact posterior for K=1, agreement
with a long float64 eager reference run, determinism of the counter-based streams, bad inputs."""
import math

import pytest
import torch

import gmmkernels  # noqa: F401
from gmmkernels import _backend
from gmmkernels import _registrations_fit  # noqa: F401
from gmmkernels import fit_reference as fref
from gmmkernels.fit import GibbsPrior, gibbs, gibbs_sweep

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
pytestmark = pytest.mark.skipif(not _backend.has_kernel("gibbs_sweep", "CPU"), reason="native gibbs_sweep not built")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k1_draws_are_exact_nig_posterior(device, dtype):
    # with K = 1 every sweep is an independent draw from the Normal-Inverse-Gamma posterior
    g = torch.Generator().manual_seed(0)
    N, D = 40, 2
    x = (torch.randn(N, D, generator=g, dtype=torch.float64) * torch.tensor([0.5, 2.0], dtype=torch.float64) + 1.0)
    pr = GibbsPrior(alpha=1.0, kappa0=0.5, a0=2.0, b0=1.5, m0=torch.tensor([0.2, -0.1]))
    C, S = 4000, 5
    r = gibbs(x.to(device, dtype), 1, n_chains=C, n_sweeps=S, prior=pr, seed=3, keep_trace=True,
              init=(torch.zeros(C, 1), torch.zeros(C, 1, D), torch.ones(C, 1, D)))
    mu = r.trace["means"].double().reshape(-1, D).cpu()
    var = r.trace["var"].double().reshape(-1, D).cpu()
    kn = pr.kappa0 + N
    xbar = x.mean(0)
    mn = (pr.kappa0 * pr.m0.double() + N * xbar) / kn
    an = pr.a0 + N / 2
    bn = pr.b0 + 0.5 * ((x - xbar) ** 2).sum(0) + 0.5 * pr.kappa0 * N * (xbar - pr.m0.double()) ** 2 / kn
    e_var = bn / (an - 1)
    sd_var = bn / ((an - 1) * math.sqrt(an - 2))
    n = mu.shape[0]
    assert ((mu.mean(0) - mn).abs() / (mu.std(0) / math.sqrt(n))).max() < 5
    assert ((var.mean(0) - e_var).abs() / (sd_var / math.sqrt(n))).max() < 5
    assert ((mu.var(0) - e_var / kn).abs() / (e_var / kn)).max() < 0.1  # Var[mu] = E[var] / kappa_n
    assert torch.allclose(r.trace["logw"].cpu(), torch.zeros_like(r.trace["logw"].cpu()), atol=1e-6)


def _two_cluster_data():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(30, 2, generator=g, dtype=torch.float64) * 0.6 + torch.tensor([-3.0, 0.0], dtype=torch.float64)
    b = torch.randn(20, 2, generator=g, dtype=torch.float64) * 0.9 + torch.tensor([3.0, 1.0], dtype=torch.float64)
    return torch.cat([a, b])


def _init(C, dtype):
    return (torch.full((C, 2), -math.log(2), dtype=dtype),
            torch.tensor([[-3.0, 0.0], [3.0, 1.0]], dtype=dtype).expand(C, 2, 2).contiguous(),
            torch.ones(C, 2, 2, dtype=dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_posterior_moments_match_float64_reference_run(device):
    x = _two_cluster_data()
    pr = GibbsPrior(alpha=1.0, kappa0=0.1, a0=2.0, b0=1.0)
    C, S, burn = 400, 60, 10
    r = gibbs(x.to(device, torch.float32), 2, n_chains=C, n_sweeps=S, prior=pr, seed=11, burn_in=burn, keep_trace=True,
              init=tuple(t.to(device) for t in _init(C, torch.float32)))
    # float64 eager reference: same law, torch's generator, more draws
    torch.manual_seed(5)
    lw, mu, var = _init(2 * C, torch.float64)
    m0 = torch.zeros(2, dtype=torch.float64)
    keep = {"w": [], "mu": [], "var": []}
    for s in range(S):
        _, lw, mu, var = fref.gibbs_sweep_ref(x, lw, mu, var, m0, pr.alpha, pr.kappa0, pr.a0, pr.b0)
        if s >= burn:
            keep["w"].append(lw.exp())
            keep["mu"].append(mu)
            keep["var"].append(var)
    ref = {k: torch.cat(v) for k, v in keep.items()}
    got = {"w": r.trace["logw"].exp().double().cpu().reshape(-1, 2), "mu": r.trace["means"].double().cpu().reshape(-1, 2, 2),
           "var": r.trace["var"].double().cpu().reshape(-1, 2, 2)}
    for k in ref:
        a, b = got[k], ref[k]
        # chains are independent; sweeps within a chain are correlated: inflate the standard error by the sweep count
        se = torch.sqrt(a.var(0) / C + b.var(0) / (2 * C))
        z = ((a.mean(0) - b.mean(0)).abs() / se).max()
        assert z < 5, (k, a.mean(0), b.mean(0))
        assert ((a.var(0) - b.var(0)).abs() / b.var(0)).max() < 0.25, (k, a.var(0), b.var(0))


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_chains(device):
    x = _two_cluster_data().float().to(device)
    pr = GibbsPrior()
    init = tuple(t.to(device) for t in _init(64, torch.float32))
    a = gibbs(x, 2, n_chains=64, n_sweeps=5, prior=pr, seed=7, init=init)
    b = gibbs(x, 2, n_chains=64, n_sweeps=5, prior=pr, seed=7, init=init)
    c = gibbs(x, 2, n_chains=64, n_sweeps=5, prior=pr, seed=8, init=init)
    for u, v in zip(a[:4], b[:4]):
        assert torch.equal(u, v)
    assert not torch.equal(a.means, c.means)
    # chains are independent of how many chains run beside them: chain i's streams are keyed by (seed, i, sweep)
    d = gibbs(x, 2, n_chains=16, n_sweeps=5, prior=pr, seed=7, init=tuple(t[:16] for t in init))
    assert torch.equal(d.means, a.means[:16])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_first_sweep():
    x = _two_cluster_data()
    pr = GibbsPrior()
    init = _init(32, torch.float64)
    a = gibbs_sweep(x, *init, pr, seed=1, step=0)
    b = gibbs_sweep(x.cuda(), *(t.cuda() for t in init), pr, seed=1, step=0)
    assert torch.equal(a[0], b[0].cpu())
    for u, v in zip(a[1:], b[1:]):
        torch.testing.assert_close(u, v.cpu(), rtol=1e-9, atol=1e-9)


def test_per_chain_data_and_errors():
    x = torch.randn(3, 20, 2)
    r = gibbs(x, 2, n_chains=3, n_sweeps=2, seed=0)
    assert r.means.shape == (3, 2, 2) and r.z.shape == (3, 20) and r.z.dtype == torch.int32
    with pytest.raises(ValueError, match="gibbs: x has 3 data sets but n_chains=4"):
        gibbs(x, 2, n_chains=4)
    with pytest.raises(ValueError, match="gibbs: prior alpha"):
        gibbs(x[0], 2, prior=GibbsPrior(alpha=0.0))
    with pytest.raises(ValueError, match="exceeds the number of points"):
        gibbs(x[0], 25)
    with pytest.raises(RuntimeError, match="gibbs_sweep: means must be"):
        torch.ops.gmmkernels.gibbs_sweep(x[:1], torch.zeros(2, 2), torch.zeros(2, 3, 2), torch.ones(2, 3, 2), torch.zeros(2),
                                         1.0, 1.0, 1.0, 1.0, 0, 0)
