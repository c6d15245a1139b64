"""EM fitting (gmmkernels/fit/em.py) against scikit-learn from the same initialisation, batching, regularisation
and bad inputs."""
import numpy as np
import pytest
import torch

import gmmkernels  # noqa: F401
from gmmkernels import fit_em

sk_mixture = pytest.importorskip("sklearn.mixture")
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus  # noqa: E402

from _cases import blobs3 as _blobs, cov_of as _cov_of  # noqa: E402

COVS = ["diag", "spherical", "full"]


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




def test_em_all_overrides_replace_the_initial_m_step():
    """weights_init, means_init and precisions_init together fix the starting mixture: the init method is then
    irrelevant, and the fit equals the one started from that GaussianMixture."""
    X = torch.tensor(_blobs(2, n=150, D=3))
    g = torch.Generator().manual_seed(3)
    w0 = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    m0 = torch.randn(3, 3, generator=g, dtype=torch.float64) * 2
    p0 = 0.5 + torch.rand(3, 3, generator=g, dtype=torch.float64)
    kw = dict(weights_init=w0, means_init=m0, precisions_init=p0, tol=1e-9, max_iter=200)
    fits = [fit_em(X, 3, "diag", init=init, generator=torch.Generator().manual_seed(0), **kw)
            for init in ("random", "kmeans", torch.full((len(X), 3), 1 / 3, dtype=torch.float64))]
    want = fit_em(X, 3, "diag", init=gmmkernels.GaussianMixture(w0.log(), m0, p0.rsqrt(), "diag"), tol=1e-9, max_iter=200)
    for f in fits:
        assert int(f.n_iter) == int(want.n_iter)
        torch.testing.assert_close(f.lower_bound, want.lower_bound, rtol=1e-12, atol=0)
        torch.testing.assert_close(f.mixture.means, want.mixture.means, rtol=1e-10, atol=1e-10)
