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


def _layout_inputs(layout, dtype):
    C, N, K, D, shared = layout
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1 if shared else C, N, D, generator=g, dtype=torch.float64) * 2
    logw = torch.log_softmax(torch.randn(C, K, generator=g, dtype=torch.float64), -1)
    mu = torch.randn(C, K, D, generator=g, dtype=torch.float64) * 2
    var = torch.rand(C, K, D, generator=g, dtype=torch.float64) + 0.5
    return [t.to(dtype) for t in (x, logw, mu, var, torch.zeros(D, dtype=torch.float64))]


# chains x points x components x dims: the CUDA warp kernel (a warp per chain: per-chain state up to 4 KB; N not a
# multiple of 32, fewer chains than a block's 8, several blocks, one shared data set), then the block kernel (a block
# per chain: K (3 D + 3) values of the chain's state past 4 KB)
CUDA_LAYOUTS = [(3, 45, 3, 2, False), (21, 300, 5, 4, True), (5, 70, 20, 12, False)]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", CUDA_LAYOUTS, ids=lambda t: "x".join(map(str, t[:4])) + ("-shared" if t[4] else ""))
def test_cuda_layouts_match_cpu(layout):
    args = _layout_inputs(layout, torch.float64)
    a = torch.ops.gmmkernels.gibbs_sweep(*args, 1.0, 0.1, 2.0, 1.0, 7, 3, 0)
    b = torch.ops.gmmkernels.gibbs_sweep(*(t.cuda() for t in args), 1.0, 0.1, 2.0, 1.0, 7, 3, 0)
    assert torch.equal(a[0], b[0].cpu())
    for u, v in zip(a[1:], b[1:]):
        torch.testing.assert_close(u, v.cpu(), rtol=1e-9, atol=1e-9)


# The CUDA kernels' block programs run on CPU threads (csrc/simt/gibbs_sweep.cpp), against the CPU kernel: the layouts
# of test_cuda_layouts_match_cpu (the last one takes the block layout in float64 only), chains whose state takes the
# block layout in float32 too (25 (3 20 + 3) values; the last 13 of its 525 statistics items are split over 9
# segments of the points), and nine chains of one component and one dimension (two blocks of the warp layout, the
# second with one chain: its other seven warps leave at once)
SIMT_LAYOUTS = CUDA_LAYOUTS + [(3, 90, 25, 20, False), (9, 33, 1, 1, False)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", SIMT_LAYOUTS, ids=lambda t: "x".join(map(str, t[:4])) + ("-shared" if t[4] else ""))
def test_simt_layouts_match_cpu(layout, dtype):
    """The same assignments as the CPU kernel (the logits differ by rounding only: the CPU kernel accumulates in
    float64, the GPU layouts in the chain's dtype; no draw of these inputs falls within that rounding of a boundary)
    and the same conjugate draws up to the rounding of the statistics' sums."""
    if not _backend.has_kernel("_simt_gibbs_sweep", "CPU"):
        pytest.skip("the extension has no CPU run of the CUDA kernels")
    args = _layout_inputs(layout, dtype)
    a = torch.ops.gmmkernels.gibbs_sweep(*args, 1.0, 0.1, 2.0, 1.0, 7, 3, 2)
    b = torch.ops.gmmkernels._simt_gibbs_sweep(*args, 1.0, 0.1, 2.0, 1.0, 7, 3, 2)
    assert torch.equal(a[0], b[0])
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    for u, v in zip(a[1:], b[1:]):
        torch.testing.assert_close(u, v, **tol)


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
