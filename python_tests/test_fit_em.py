"""EM and VB fitting (gmmkernels.fit) against scikit-learn, the fused sufficient-statistics op against its reference,
batching, determinism and bad inputs."""
import numpy as np
import pytest
import torch

import gmmkernels  # noqa: F401
from gmmkernels import _backend
from gmmkernels import _registrations_fit  # noqa: F401
from gmmkernels import fit_reference as fref
from gmmkernels.fit import fit_em, fit_vb, kmeans_plusplus, mixture_suffstats

sk_mixture = pytest.importorskip("sklearn.mixture")
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus  # noqa: E402

COVS = ["diag", "spherical", "full"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _blobs(seed=0, n=100, D=3):
    rng = np.random.RandomState(seed)
    return np.concatenate([rng.randn(n, D) * s + m for s, m in [(0.5, 0.0), (1.0, 4.0), (0.7, -4.0)]])


def _cov_of(mix):
    return mix.covariance().numpy() if mix.cov_type == "full" else (mix.scale**2).numpy()


# -- mixture_suffstats ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
# the last two are long enough for the CUDA kernel to split N into chunks (partial sums added in a second pass)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 37, 5, 3), (3, 130, 33, 40), (2, 0, 3, 2), (1, 5000, 16, 8),
                                   (2, 3001, 5, 20), (2, 50, 3, 0)], ids=str)
@pytest.mark.parametrize("shared_x", [False, True])
def test_suffstats_matches_reference(device, full, dtype, shape, shared_x):
    if not _backend.has_kernel("mixture_suffstats", "CUDA" if device == "cuda" else "CPU"):
        pytest.skip("no native mixture_suffstats kernel")
    B, N, K, D = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1 if shared_x else B, N, D, generator=g, dtype=torch.float64)
    r = torch.softmax(torch.randn(B, N, K, generator=g, dtype=torch.float64), -1)
    want = fref.mixture_suffstats_ref(x, r, full)
    got = torch.ops.gmmkernels.mixture_suffstats(x.to(device, dtype), r.to(device, dtype), full)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5 * max(1, N) ** 0.5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double().cpu(), b, **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_suffstats_deterministic_and_public_wrapper(device):
    x = torch.randn(4, 4000, 7, device=device)
    r = torch.softmax(torch.randn(4, 4000, 9, device=device), -1)
    a = mixture_suffstats(x, r, True)
    b = mixture_suffstats(x, r, True)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    if _backend.has_kernel("mixture_suffstats", "CUDA" if device == "cuda" else "CPU"):
        assert torch.equal(a[2], a[2].transpose(-1, -2))  # the kernels write each mirrored pair from one sum
    c = mixture_suffstats(x.double(), r.double(), True, backend="reference")
    for u, v in zip(a, c):
        torch.testing.assert_close(u.double(), v, rtol=1e-5, atol=1e-3)


def test_suffstats_errors():
    with pytest.raises(ValueError, match="mixture_suffstats: 'x' has N=3"):
        mixture_suffstats(torch.randn(3, 2), torch.rand(4, 2))
    if _backend.has_kernel("mixture_suffstats", "CPU"):
        with pytest.raises(RuntimeError, match="mixture_suffstats"):
            torch.ops.gmmkernels.mixture_suffstats(torch.randn(2, 3), torch.rand(1, 3, 2), False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_suffstats_errors_cuda():
    if not _backend.has_kernel("mixture_suffstats", "CUDA"):
        pytest.skip("no CUDA mixture_suffstats kernel")
    op = torch.ops.gmmkernels.mixture_suffstats
    x, r = torch.randn(1, 3, 2, device="cuda"), torch.rand(1, 3, 2, device="cuda")
    with pytest.raises(RuntimeError, match="mixture_suffstats"):
        op(x[0], r, False)  # x not [B, N, D]
    with pytest.raises(RuntimeError, match="mixture_suffstats"):
        op(x, r.cpu(), False)  # mixed devices
    with pytest.raises(RuntimeError, match="mixture_suffstats"):
        op(x, r.double(), False)  # mixed dtypes
    with pytest.raises(RuntimeError, match="mixture_suffstats"):
        op(x, r[:, :2], False)  # N mismatch


# -- EM ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cov", COVS)
def test_em_matches_sklearn_from_same_init(cov):
    X = _blobs()
    K = 3
    rng = np.random.RandomState(3)
    means0 = X[rng.choice(len(X), K, replace=False)]
    w0 = np.full(K, 1.0 / K)
    D = X.shape[1]
    prec0 = {"diag": np.ones((K, D)), "spherical": np.ones(K), "full": np.stack([np.eye(D)] * K)}[cov]
    sk = sk_mixture.GaussianMixture(K, covariance_type=cov, weights_init=w0, means_init=means0, precisions_init=prec0,
                                    tol=1e-8, max_iter=500, reg_covar=1e-6).fit(X)
    r = fit_em(torch.tensor(X), K, cov, weights_init=torch.tensor(w0), means_init=torch.tensor(means0),
               precisions_init=torch.tensor(prec0), tol=1e-8, max_iter=500, reg_covar=1e-6)
    m = r.mixture
    assert int(r.n_iter) == sk.n_iter_ and bool(r.converged) == sk.converged_
    np.testing.assert_allclose(float(r.lower_bound), sk.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(m.weights.numpy(), sk.weights_, atol=1e-9)
    np.testing.assert_allclose(m.means.numpy(), sk.means_, atol=1e-8)
    np.testing.assert_allclose(_cov_of(m), sk.covariances_, atol=1e-8)


@pytest.mark.parametrize("cov", COVS)
def test_em_batched_equals_one_at_a_time(cov):
    Xs = torch.stack([torch.tensor(_blobs(s, n=60)) for s in range(3)])
    g = torch.Generator().manual_seed(0)
    resp = torch.softmax(torch.randn(3, 180, 3, generator=g, dtype=torch.float64) * 3, -1)
    rb = fit_em(Xs, 3, cov, init=resp, tol=1e-6)
    for i in range(3):
        ri = fit_em(Xs[i], 3, cov, init=resp[i], tol=1e-6)
        assert int(rb.n_iter[i]) == int(ri.n_iter)
        torch.testing.assert_close(rb.mixture.means[i], ri.mixture.means)
        torch.testing.assert_close(rb.lower_bound[i], ri.lower_bound)


def test_em_float32_kmeanspp_default_runs_and_improves():
    X = torch.tensor(_blobs(1), dtype=torch.float32) + 1000.0  # a large offset: the centring keeps float32 accurate
    r = fit_em(X, 3, "full", generator=torch.Generator().manual_seed(0), init="k-means++")
    sk = sk_mixture.GaussianMixture(3, covariance_type="full", random_state=0).fit(X.double().numpy())
    assert bool(r.converged)
    assert abs(float(r.lower_bound) - sk.lower_bound_) < 1e-3
    assert torch.isfinite(r.mixture.scale).all()


def test_kmeans_plusplus_spreads_seeds():
    X = torch.tensor(_blobs(2), dtype=torch.float64)
    idx = kmeans_plusplus(X, 3, torch.Generator().manual_seed(0))
    labels = torch.arange(300) // 100
    assert sorted(labels[idx].tolist()) == [0, 1, 2]


def test_em_errors_and_regularisation():
    X = torch.randn(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="fit_em: n_components=11 exceeds the number of points N=10"):
        fit_em(X, 11)
    with pytest.raises(ValueError, match="fit_em: argument 'x' contains NaN"):
        fit_em(torch.full((10, 2), float("nan")), 2)
    with pytest.raises(ValueError, match="fit_em: argument 'cov_type'"):
        fit_em(X, 2, "tied")
    dup = torch.ones(20, 3, dtype=torch.float64)  # degenerate data: all points equal
    with pytest.raises(ValueError, match="ill-defined"):
        fit_em(dup, 2, "full", reg_covar=0.0, init="random", generator=torch.Generator().manual_seed(0))
    r = fit_em(dup, 2, "full", reg_covar=1e-6, init="random", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r.mixture.covariance()[0], 1e-6 * torch.eye(3, dtype=torch.float64))  # documented: reg_covar


# -- VB ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("wtype", ["dirichlet_process", "dirichlet_distribution"])
def test_vb_matches_sklearn(cov, wtype):
    X = _blobs()
    K = 3
    sk = sk_mixture.BayesianGaussianMixture(n_components=K, covariance_type=cov, init_params="k-means++", random_state=0, tol=1e-6,
                                            max_iter=300, weight_concentration_prior_type=wtype).fit(X)
    _, idx = sk_kmeans_plusplus(X, K, random_state=0)
    resp = torch.zeros(len(X), K, dtype=torch.float64)
    resp[idx, torch.arange(K)] = 1
    r = fit_vb(torch.tensor(X), K, cov, init=resp, tol=1e-6, max_iter=300, weight_concentration_prior_type=wtype)
    m = r.mixture
    assert int(r.n_iter) == sk.n_iter_
    np.testing.assert_allclose(float(r.lower_bound), sk.lower_bound_, rtol=1e-9)
    np.testing.assert_allclose(m.weights.numpy(), sk.weights_, atol=1e-9)
    np.testing.assert_allclose(m.means.numpy(), sk.means_, atol=1e-8)
    np.testing.assert_allclose(_cov_of(m), sk.covariances_, atol=1e-8)
    np.testing.assert_allclose(r.extras["degrees_of_freedom"].numpy(), sk.degrees_of_freedom_, atol=1e-8)


def test_vb_errors():
    with pytest.raises(ValueError, match="fit_vb: degrees_of_freedom_prior must be > D - 1"):
        fit_vb(torch.randn(20, 3), 2, degrees_of_freedom_prior=1.0)
