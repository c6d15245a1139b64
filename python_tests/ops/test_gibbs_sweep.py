"""gibbs_sweep (gmmkernels/ops/gibbs_sweep.py): the kernel's conditional draws are the exact posterior (K = 1),
CUDA equals CPU, the reference backend, fake kernel and bad inputs. The multi-sweep sampler is tested in
python_tests/fit/test_gibbs.py."""
import math

import pytest
import torch

import gmmkernels  # noqa: F401
from gmmkernels import GibbsPrior, _backend, gibbs, gibbs_sweep

from _cases import gibbs_init as _init, gibbs_two_clusters as _two_cluster_data  # noqa: E402

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


# chains x points x components x dims: the CUDA warp kernel (a warp per chain: per-chain state up to 4 KB; N not a
# multiple of 32, fewer chains than a block's 8, several blocks, one shared data set), then the block kernel (a block
# per chain: K (3 D + 3) values of the chain's state past 4 KB)
CUDA_LAYOUTS = [(3, 45, 3, 2, False), (21, 300, 5, 4, True), (5, 70, 20, 12, False)]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", CUDA_LAYOUTS, ids=lambda t: "x".join(map(str, t[:4])) + ("-shared" if t[4] else ""))
def test_cuda_layouts_match_cpu(layout):
    C, N, K, D, shared = layout
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1 if shared else C, N, D, generator=g, dtype=torch.float64) * 2
    logw = torch.log_softmax(torch.randn(C, K, generator=g, dtype=torch.float64), -1)
    mu = torch.randn(C, K, D, generator=g, dtype=torch.float64) * 2
    var = torch.rand(C, K, D, generator=g, dtype=torch.float64) + 0.5
    m0 = torch.zeros(D, dtype=torch.float64)
    a = torch.ops.gmmkernels.gibbs_sweep(x, logw, mu, var, m0, 1.0, 0.1, 2.0, 1.0, 7, 3, 0)
    b = torch.ops.gmmkernels.gibbs_sweep(x.cuda(), logw.cuda(), mu.cuda(), var.cuda(), m0.cuda(), 1.0, 0.1, 2.0, 1.0, 7,
                                         3, 0)
    assert torch.equal(a[0], b[0].cpu())
    for u, v in zip(a[1:], b[1:]):
        torch.testing.assert_close(u, v.cpu(), rtol=1e-9, atol=1e-9)


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
