"""EM / VB on chunked data (gmmkernels/fit/chunked.py): a list of chunks and a DataLoader give the fit of the data
taken together (fit_em / fit_vb from the same start), batched chunks, bad inputs; and two gloo processes launched
with torchrun, each holding half of the data, give the single-process fit."""
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

import gmmkernels
from gmmkernels import GaussianMixture, fit_em, fit_em_chunked, fit_vb, fit_vb_chunked

from _cases import blobs3

COVS = ["diag", "spherical", "full"]


def _data(n=120, D=3, seed=0):
    return torch.tensor(blobs3(seed, n=n, D=D))


def _start(cov, K=3, D=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(K, D, generator=g, dtype=torch.float64) * 3
    scale = {"diag": torch.ones(K, D), "spherical": torch.ones(K), "full": torch.eye(D).expand(K, D, D)}[cov]
    return GaussianMixture(torch.zeros(K, dtype=torch.float64), means, scale.double().contiguous(), cov)


def _same_fit(a, b, cov, rtol=1e-10):
    assert torch.equal(a.n_iter, b.n_iter) and torch.equal(a.converged, b.converged)
    torch.testing.assert_close(a.lower_bound, b.lower_bound, rtol=rtol, atol=0)
    for u, v in ((a.mixture.weights, b.mixture.weights), (a.mixture.means, b.mixture.means),
                 (a.mixture.covariance(), b.mixture.covariance())):
        torch.testing.assert_close(u, v, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("cov", COVS)
def test_em_chunks_equal_one_tensor(cov):
    X = _data()
    init = _start(cov)
    want = fit_em(X, 3, cov, init=init, tol=1e-9, max_iter=300)
    got = fit_em_chunked(list(X.split(47)), 3, cov, init=init, tol=1e-9, max_iter=300)
    _same_fit(got, want, cov)
    # a DataLoader over a TensorDataset (tuples (x, label)) and a callable returning a fresh iterator
    ds = torch.utils.data.TensorDataset(X, torch.zeros(len(X)))
    dl = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
    _same_fit(fit_em_chunked(dl, 3, cov, init=init, tol=1e-9, max_iter=300), want, cov)
    _same_fit(fit_em_chunked(lambda: iter(X.split(100)), 3, cov, init=init, tol=1e-9, max_iter=300), want, cov)


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("wtype", ["dirichlet_process", "dirichlet_distribution"])
def test_vb_chunks_equal_one_tensor(cov, wtype):
    X = _data()
    init = _start(cov)
    resp = init.responsibilities(X)  # chunked VB starts from the statistics of one pass under the init mixture
    want = fit_vb(X, 3, cov, init=resp, tol=1e-9, max_iter=300, weight_concentration_prior_type=wtype)
    got = fit_vb_chunked(list(X.split(33)), 3, cov, init=init, tol=1e-9, max_iter=300,
                         weight_concentration_prior_type=wtype)
    _same_fit(got, want, cov)
    torch.testing.assert_close(got.extras["degrees_of_freedom"], want.extras["degrees_of_freedom"])


def test_batched_chunks_and_float32():
    Xs = torch.stack([_data(60, seed=s) for s in range(2)])  # two data sets, two mixtures
    init = _start("diag")
    want = fit_em(Xs, 3, "diag", init=init, tol=1e-7)
    got = fit_em_chunked(list(Xs.split(50, dim=1)), 3, "diag", init=init, tol=1e-7)
    _same_fit(got, want, "diag")
    w32 = fit_em(Xs.float(), 3, "diag", init=init, tol=1e-4, max_iter=20)
    g32 = fit_em_chunked(list(Xs.float().split(50, dim=1)), 3, "diag", init=init, tol=1e-4, max_iter=20)
    torch.testing.assert_close(g32.mixture.means, w32.mixture.means, rtol=1e-4, atol=1e-4)


def test_string_init_on_the_first_chunk():
    X = _data()
    r = fit_em_chunked(list(X.split(200)), 3, "full", init="kmeans", generator=torch.Generator().manual_seed(0))
    sk = fit_em(X, 3, "full", init="kmeans", generator=torch.Generator().manual_seed(0))
    assert bool(r.converged) and abs(float(r.lower_bound) - float(sk.lower_bound)) < 1e-3


def test_chunked_errors():
    X = _data()
    with pytest.raises(ValueError, match="fit_em_chunked: argument 'chunks' is an iterator"):
        fit_em_chunked(iter(X.split(50)), 3)
    with pytest.raises(ValueError, match="fit_em_chunked: argument 'chunks' yielded no chunk"):
        fit_em_chunked([], 3)
    with pytest.raises(ValueError, match=r"fit_em_chunked: every chunk must have shape \[n, D=3\]"):
        fit_em_chunked([X[:50], X[50:, :2]], 3, init=_start("diag"))
    with pytest.raises(TypeError, match="fit_vb_chunked: argument 'chunks' must yield floating-point tensors"):
        fit_vb_chunked([torch.arange(6).reshape(3, 2)], 2)
    with pytest.raises(ValueError, match="fit_em_chunked: distributed=True needs torch.distributed initialised"):
        fit_em_chunked([X], 3, distributed=True)
    with pytest.raises(ValueError, match="fit_em_chunked: argument 'cov_type'"):
        fit_em_chunked([X], 3, "tied")


# -- two processes -------------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, os, sys, torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    from gmmkernels import GaussianMixture, fit_em_chunked, fit_vb_chunked
    sys.path.insert(0, sys.argv[2])
    from _cases import blobs3
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    X = torch.tensor(blobs3(0, n=120, D=3))
    mine = X[rank::world]  # interleaved shards, chunks of 25 rows
    init = torch.load(os.path.join(sys.argv[1], "init.pt"))
    out = {}
    for cov in ("diag", "full"):
        m = GaussianMixture(*init[cov], cov)
        em = fit_em_chunked(list(mine.split(25)), 3, cov, init=m, tol=1e-9, max_iter=300, distributed=True)
        vb = fit_vb_chunked(list(mine.split(25)), 3, cov, init=m, tol=1e-9, max_iter=300, distributed=True)
        out[cov] = [em.lower_bound, em.n_iter, em.mixture.means, em.mixture.covariance(),
                    vb.lower_bound, vb.n_iter, vb.mixture.means, vb.mixture.covariance()]
    # kmeans initialisation on rank 0's first chunk, broadcast: every rank ends with the same mixture
    km = fit_em_chunked(list(mine.split(60)), 3, "diag", init="kmeans", generator=torch.Generator().manual_seed(rank),
                        distributed=True)
    allm = [torch.zeros_like(km.mixture.means) for _ in range(world)]
    dist.all_gather(allm, km.mixture.means)
    out["kmeans_same_on_all_ranks"] = all(torch.equal(a, allm[0]) for a in allm)
    torch.save(out, os.path.join(sys.argv[1], f"rank{rank}.pt"))
    dist.destroy_process_group()
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(tmp_path):
    init = {cov: (m.logits, m.means, m.scale) for cov in ("diag", "full") for m in [_start(cov)]}
    torch.save(init, tmp_path / "init.pt")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # the workers import the gmmkernels this test imported (the checkout under test, not an installed copy)
    root = os.path.dirname(os.path.dirname(os.path.abspath(gmmkernels.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script), str(tmp_path), here]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    X = torch.tensor(blobs3(0, n=120, D=3))
    res = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    for cov in ("diag", "full"):
        m = GaussianMixture(*init[cov], cov)
        em = fit_em(X, 3, cov, init=m, tol=1e-9, max_iter=300)
        vb = fit_vb(X, 3, cov, init=m.responsibilities(X), tol=1e-9, max_iter=300)
        want = [em.lower_bound, em.n_iter, em.mixture.means, em.mixture.covariance(),
                vb.lower_bound, vb.n_iter, vb.mixture.means, vb.mixture.covariance()]
        for rk in res:
            for a, b in zip(rk[cov], want):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert res[0]["kmeans_same_on_all_ranks"]
