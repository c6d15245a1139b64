"""The scikit-learn front-end: scikit-learn's own estimator checks, and agreement with sklearn.mixture on the same
initialisation (lower bound, parameters, predictions, sampling), degenerate data included."""
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
from sklearn import mixture as skm  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from gmmkernels.integrations.sklearn import BayesianGaussianMixture, GaussianMixture  # noqa: E402

COVS = ("full", "diag", "spherical")
#: scikit-learn's checks that are not run, and why (docs/integrations/sklearn.md lists them too): none are skipped;
#: check_array_api_input skips itself unless SCIPY_ARRAY_API=1 (array-API inputs other than numpy and torch).
EXPECTED_FAILED_CHECKS: dict = {}


@parametrize_with_checks([GaussianMixture(), BayesianGaussianMixture()],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def _data(kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    if kind == "blobs":
        return np.vstack([rng.randn(120, 3), 0.5 * rng.randn(90, 3) + [4, 4, 0], 2 * rng.randn(60, 3) + [-3, 5, 1]])
    if kind == "anisotropic":
        A = np.array([[2.0, 0.0], [1.5, 0.3]])
        return np.vstack([rng.randn(150, 2) @ A, rng.randn(100, 2) @ A.T + [6, -2]])
    if kind == "duplicates":  # 12 distinct points, each repeated 10 times
        return np.repeat(rng.randn(12, 2) * 3, 10, axis=0)
    if kind == "constant_feature":
        X = np.vstack([rng.randn(80, 3), rng.randn(60, 3) + 5])
        X[:, 1] = 7.0
        return X
    if kind == "k_close_to_n":
        return rng.randn(9, 2)
    raise ValueError(kind)


def _n_components(kind: str) -> int:
    return {"k_close_to_n": 8, "duplicates": 5}.get(kind, 3)


DEGENERATE = ("duplicates", "constant_feature", "k_close_to_n")


def _close(actual, desired, rel, name=""):
    """Equal up to ``rel`` times the largest entry of ``desired``: round-off of ill-conditioned fits (precisions of
    1e8 next to ones) shows up in entries that are small next to their matrix."""
    desired = np.asarray(desired, dtype=np.float64)
    np.testing.assert_allclose(actual, desired, rtol=rel, atol=rel * max(1.0, float(np.abs(desired).max())),
                               err_msg=name)


def _same_fit(a, b, X, *, rtol=1e-7, degenerate=False):
    """The gmmkernels estimator b agrees with the scikit-learn estimator a on X.

    Degenerate data (duplicated points, a constant feature, K close to N) put components on (nearly) singular
    covariances, where the result is round-off amplified by condition numbers up to 1e6 / reg_covar: fit_em's one-pass
    covariance E[x^2] - E[x]^2 leaves ~1e-10 where scikit-learn's two-pass form gives an exact 0, which moves a
    precision of 1e6 by ~1e-4 relative. There the parameters are compared to 1e-3 of each array's scale and the
    densities to 1e-5 relative (1e-4 absolute in log p); the predicted labels must still be identical. Components that scikit-learn leaves
    nearly empty (weight < 1e-6) are compared by weight only: with N_k ~ 1e-8, the 10 eps that both add to N_k
    shifts the one-pass covariance by (10 eps / N_k) E[x]^2 ~ 1e-7 (scikit-learn's two-pass form cancels it), which
    is 20 % of a reg_covar of 1e-6."""
    param_rel, dens_rtol = (1e-3, 1e-5) if degenerate else (rtol, rtol)
    assert b.n_iter_ == a.n_iter_ and b.converged_ == a.converged_
    np.testing.assert_allclose(b.lower_bound_, a.lower_bound_, rtol=dens_rtol, atol=1e-9)
    _close(b.weights_, a.weights_, param_rel, "weights_")
    live = a.weights_ > 1e-6 if degenerate else slice(None)
    for name in ("means_", "covariances_", "precisions_", "precisions_cholesky_"):
        _close(getattr(b, name)[live], getattr(a, name)[live], param_rel, name)
    np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), rtol=dens_rtol, atol=10 * dens_rtol)
    # a point on a nearly empty component sees that component's covariance (weight 1e-9, density 1e6): 1e-5 in log p
    np.testing.assert_allclose(b.score_samples(X), a.score_samples(X), rtol=dens_rtol, atol=1e-4 if degenerate else 1e-9)
    np.testing.assert_array_equal(b.predict(X), a.predict(X))
    assert b.n_features_in_ == a.n_features_in_


def _fit_both(cls_sk, cls_gk, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cls_sk(**kw).fit(X), cls_gk(**kw).fit(X)


KINDS = ("blobs", "anisotropic", "duplicates", "constant_feature", "k_close_to_n")
INITS = ("random", "k-means++", "random_from_data")


# every data set with every covariance type, the initialisations taking turns (each (kind, init) pair occurs)
@pytest.mark.parametrize("kind,cov,init", [(k, c, INITS[(i + j) % 3]) for i, k in enumerate(KINDS)
                                           for j, c in enumerate(COVS)])
def test_gaussian_mixture_matches_sklearn(kind, cov, init):
    X = _data(kind)
    kw = dict(n_components=_n_components(kind), covariance_type=cov, init_params=init, random_state=3, n_init=2)
    a, b = _fit_both(skm.GaussianMixture, GaussianMixture, X, **kw)
    _same_fit(a, b, X, degenerate=kind in DEGENERATE)
    rel = 1e-5 if kind in DEGENERATE else 1e-9
    assert b.bic(X) == pytest.approx(a.bic(X), rel=rel)
    assert b.aic(X) == pytest.approx(a.aic(X), rel=rel)
    assert b.score(X) == pytest.approx(a.score(X), rel=rel)
    xa, ya = a.sample(50)
    xb, yb = b.sample(50)
    assert xb.shape == xa.shape and yb.shape == ya.shape
    if kind not in DEGENERATE:  # degenerate fits: the draws follow weights that differ in the last digits, and
        np.testing.assert_array_equal(yb, ya)  # numpy factors near-singular covariances by an SVD round-off can flip
        np.testing.assert_allclose(xb, xa, rtol=1e-7, atol=1e-9)


PRIORS = ("dirichlet_process", "dirichlet_distribution")


@pytest.mark.parametrize("kind,cov,prior", [(k, c, PRIORS[(i + j) % 2]) for i, k in enumerate(KINDS)
                                            for j, c in enumerate(COVS)])
def test_bayesian_gaussian_mixture_matches_sklearn(kind, cov, prior):
    X = _data(kind, seed=1)
    kw = dict(n_components=_n_components(kind) + 1, covariance_type=cov, init_params="random_from_data",
              random_state=0, weight_concentration_prior_type=prior, max_iter=200)
    a, b = _fit_both(skm.BayesianGaussianMixture, BayesianGaussianMixture, X, **kw)
    _same_fit(a, b, X, rtol=1e-6, degenerate=kind in DEGENERATE)
    for name in ("mean_precision_", "degrees_of_freedom_", "mean_prior_", "covariance_prior_"):
        _close(getattr(b, name), getattr(a, name), 1e-3 if kind in DEGENERATE else 1e-6, name)
    wa, wb = a.weight_concentration_, b.weight_concentration_
    for u, v in zip(wa if isinstance(wa, tuple) else (wa,), wb if isinstance(wb, tuple) else (wb,)):
        _close(v, u, 1e-3 if kind in DEGENERATE else 1e-6)
    assert b.weight_concentration_prior_ == pytest.approx(a.weight_concentration_prior_)
    assert b.degrees_of_freedom_prior_ == pytest.approx(a.degrees_of_freedom_prior_)


def test_user_initial_parameters_match_sklearn():
    X = _data("blobs")
    rng = np.random.RandomState(5)
    K, D = 3, X.shape[1]
    prec = np.stack([np.eye(D) * (1 + k) for k in range(K)])
    kw = dict(n_components=K, covariance_type="full", random_state=0, weights_init=np.array([0.2, 0.3, 0.5]),
              means_init=rng.randn(K, D) * 3, precisions_init=prec)
    a, b = _fit_both(skm.GaussianMixture, GaussianMixture, X, **kw)
    _same_fit(a, b, X)


def test_default_kmeans_init_fits_as_well_and_is_reproducible():
    X = _data("blobs")
    a = skm.GaussianMixture(3, random_state=0, tol=1e-10).fit(X)
    b1 = GaussianMixture(3, random_state=0, tol=1e-10).fit(X)
    b2 = GaussianMixture(3, random_state=0, tol=1e-10).fit(X)
    np.testing.assert_array_equal(b1.means_, b2.means_)
    assert b1.lower_bound_ == pytest.approx(a.lower_bound_, abs=1e-8)  # the same optimum, from another start
    order_a, order_b = np.argsort(a.means_[:, 0]), np.argsort(b1.means_[:, 0])
    np.testing.assert_allclose(b1.means_[order_b], a.means_[order_a], atol=1e-4)


def test_warm_start_continues_from_the_previous_fit():
    X = _data("anisotropic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = GaussianMixture(2, init_params="random", random_state=0, max_iter=1, warm_start=True, tol=0.0)
        for _ in range(4):
            one.fit(X)
        ref = GaussianMixture(2, init_params="random", random_state=0, max_iter=4, tol=0.0).fit(X)
    np.testing.assert_allclose(one.means_, ref.means_, rtol=1e-10)


@pytest.mark.parametrize("cov", COVS)
def test_float32_input_stays_float32_and_is_close_to_float64(cov):
    X = _data("blobs")
    kw = dict(n_components=3, init_params="k-means++", random_state=0, covariance_type=cov, tol=0.0, max_iter=30)
    a, b = _fit_both(skm.GaussianMixture, GaussianMixture, X, **kw)  # float64
    _, c = _fit_both(skm.GaussianMixture, GaussianMixture, X.astype(np.float32), **kw)
    assert c.means_.dtype == np.float32 and c.score_samples(X).dtype == np.float32
    np.testing.assert_allclose(c.means_, a.means_, atol=1e-4)
    np.testing.assert_allclose(c.score_samples(X), a.score_samples(X), atol=1e-4)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_tensors_in_torch_tensors_out(device):
    X = _data("blobs")
    Xt = torch.tensor(X, device=device)
    a = GaussianMixture(3, init_params="random_from_data", random_state=0).fit(X)
    b = GaussianMixture(3, init_params="random_from_data", random_state=0).fit(Xt)
    assert b.mixture_.means.device.type == device
    labels, proba, lp = b.predict(Xt), b.predict_proba(Xt), b.score_samples(Xt)
    assert all(isinstance(t, torch.Tensor) and t.device.type == device for t in (labels, proba, lp))
    np.testing.assert_array_equal(labels.cpu().numpy(), a.predict(X))
    np.testing.assert_allclose(lp.cpu().numpy(), a.score_samples(X), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9, atol=1e-9)
    xs, ys = b.sample(7)
    assert isinstance(xs, torch.Tensor) and xs.shape == (7, 3) and ys.shape == (7,)
    # numpy data fitted on the device given by the argument
    c = GaussianMixture(3, init_params="random_from_data", random_state=0, device=device).fit(X)
    assert c.mixture_.means.device.type == device and isinstance(c.predict(X), np.ndarray)


def test_backends_agree():
    X = _data("anisotropic")
    fits = [GaussianMixture(2, random_state=0, init_params="random", backend=b).fit(X) for b in ("reference", "cpu")]
    np.testing.assert_allclose(fits[0].means_, fits[1].means_, rtol=1e-9)
    assert fits[0].n_iter_ == fits[1].n_iter_


def test_n_init_keeps_the_best_restart():
    X = _data("blobs")
    # five restarts in one batched fit: the same restarts scikit-learn runs one by one, the same winner
    a, b = _fit_both(skm.GaussianMixture, GaussianMixture, X, n_components=4, init_params="random", random_state=4,
                     n_init=5, covariance_type="diag")
    _same_fit(a, b, X)
    one = GaussianMixture(4, init_params="random", random_state=4, covariance_type="diag").fit(X)
    assert b.lower_bound_ >= one.lower_bound_


def test_refusals_name_the_argument():
    X = _data("blobs")
    with pytest.raises(ValueError, match="covariance_type.*tied.*not supported"):
        GaussianMixture(2, covariance_type="tied").fit(X)
    with pytest.raises(ValueError, match="max_iter"):
        GaussianMixture(2, max_iter=0).fit(X)
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture(0).fit(X)
    with pytest.raises(ValueError, match="init_params"):
        BayesianGaussianMixture(init_params="nope").fit(X)
    with pytest.raises(ValueError, match="weights_init"):
        GaussianMixture(2, weights_init=np.array([0.3, 0.3])).fit(X)
    with pytest.raises(ValueError, match="means_init"):
        GaussianMixture(2, means_init=np.zeros((3, 3))).fit(X)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(X[:4])
    with pytest.raises(ValueError, match="'X'.*NaN"):
        GaussianMixture(2).fit(torch.tensor([[0.0, float("nan")], [1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(ValueError, match="features"):
        GaussianMixture(2).fit(torch.tensor(X)).predict(torch.zeros(3, 5, dtype=torch.float64))
