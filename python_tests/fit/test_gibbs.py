"""Gibbs sampling of the conjugate diagonal Bayesian GMM (gmmkernels.fit.gibbs): exact posterior for K=1, agreement
with a long float64 eager reference run, determinism of the counter-based streams, bad inputs."""
import math
import textwrap

import pytest
import torch

import gmmkernels  # noqa: F401
from gmmkernels import _backend
from gmmkernels.reference import gibbs_sweep as fref
from gmmkernels import GibbsPrior, gibbs, gibbs_sweep

from _cases import gibbs_init as _init, gibbs_two_clusters as _two_cluster_data  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
pytestmark = pytest.mark.skipif(not _backend.has_kernel("gibbs_sweep", "CPU"), reason="native gibbs_sweep not built")


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


def test_per_chain_data_and_errors():
    x = torch.randn(3, 20, 2)
    r = gibbs(x, 2, n_chains=3, n_sweeps=2, seed=0)
    assert r.means.shape == (3, 2, 2) and r.z.shape == (3, 20) and r.z.dtype == torch.int32
    with pytest.raises(ValueError, match="gibbs: argument 'x' has 3 data sets but n_chains=4"):
        gibbs(x, 2, n_chains=4)
    with pytest.raises(ValueError, match=r"gibbs: argument 'prior.alpha' must be a positive finite number \(prior alpha"):
        gibbs(x[0], 2, prior=GibbsPrior(alpha=0.0))
    with pytest.raises(ValueError, match="gibbs: n_components=25 exceeds the number of points N=20"):
        gibbs(x[0], 25)
    with pytest.raises(RuntimeError, match="gibbs_sweep: means must be"):
        torch.ops.gmmkernels.gibbs_sweep(x[:1], torch.zeros(2, 2), torch.zeros(2, 3, 2), torch.ones(2, 3, 2), torch.zeros(2),
                                         1.0, 1.0, 1.0, 1.0, 0, 0)


# -- chains sharded over processes ------------------------------------------------------------------

def test_chain0_shards_draw_what_the_whole_run_draws():
    """gibbs_sweep(chain0=c0) on chains [c0, c0 + C') equals those chains of one launch over all of them."""
    g = torch.Generator().manual_seed(3)
    C, N, K, D = 5, 40, 3, 2
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    logw = torch.full((C, K), -math.log(K), dtype=torch.float64)
    means = torch.randn(C, K, D, generator=g, dtype=torch.float64)
    var = torch.rand(C, K, D, generator=g, dtype=torch.float64) + 0.5
    whole = gmmkernels.gibbs_sweep(x, logw, means, var, GibbsPrior(), seed=11, step=4, backend="cpu")
    for c0, c1 in ((0, 2), (2, 5), (4, 5)):
        part = gmmkernels.gibbs_sweep(x, logw[c0:c1], means[c0:c1], var[c0:c1], GibbsPrior(), seed=11, step=4,
                                      chain0=c0, backend="cpu")
        for a, b in zip(part, whole):
            assert torch.equal(a, b[c0:c1])
    shifted = gmmkernels.gibbs_sweep(x, logw[:2], means[:2], var[:2], GibbsPrior(), seed=11, step=4, chain0=1,
                                     backend="cpu")
    assert not torch.equal(shifted[0], whole[0][:2])  # the offset changes the streams
    with pytest.raises(ValueError, match="gibbs_sweep: argument 'chain0'"):
        gmmkernels.gibbs_sweep(x, logw, means, var, GibbsPrior(), seed=11, step=4, chain0=-1, backend="cpu")


GIBBS_WORKER = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    from gmmkernels import gibbs
    dist.init_process_group("gloo")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g, dtype=torch.float64)
    x[:30] += 3.0
    out = {}
    for C in (5, 2):  # 5 chains over 2 processes (blocks of 2 and 3); 2 chains, one each
        r = gibbs(x, 2, n_chains=C, n_sweeps=6, seed=7, keep_trace=True, burn_in=1, thin=2, backend="cpu",
                  distributed=True)
        out[C] = [r.logw, r.means, r.var, r.z, r.trace["means"]]
    torch.save(out, os.path.join(sys.argv[1], f"rank{dist.get_rank()}.pt"))
    dist.destroy_process_group()
""")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_shard_the_chains(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(GIBBS_WORKER)
    root = os.path.dirname(os.path.dirname(os.path.abspath(gmmkernels.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(script), str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g, dtype=torch.float64)
    x[:30] += 3.0
    res = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    for C in (5, 2):
        one = gmmkernels.gibbs(x, 2, n_chains=C, n_sweeps=6, seed=7, keep_trace=True, burn_in=1, thin=2,
                               backend="cpu")
        want = [one.logw, one.means, one.var, one.z, one.trace["means"]]
        for rk in res:
            for a, b in zip(rk[C], want):
                assert torch.equal(a, b)


def test_distributed_needs_an_initialised_group():
    with pytest.raises(ValueError, match="gibbs: distributed=True needs torch.distributed initialised"):
        gmmkernels.gibbs(torch.randn(20, 2), 2, n_sweeps=1, distributed=True)
