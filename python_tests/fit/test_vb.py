"""Variational Bayes (gmmkernels/fit/vb.py) against scikit-learn's BayesianGaussianMixture from the same
initialisation, and bad inputs."""
import numpy as np
import pytest
import torch

from gmmkernels import fit_vb

sk_mixture = pytest.importorskip("sklearn.mixture")
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus  # noqa: E402

from _cases import blobs3 as _blobs, cov_of as _cov_of  # noqa: E402

COVS = ["diag", "spherical", "full"]


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
    with pytest.raises(ValueError, match=r"fit_vb: argument 'degrees_of_freedom_prior' must be None or a finite number > D - 1 = \d+"):
        fit_vb(torch.randn(20, 3), 2, degrees_of_freedom_prior=1.0)
