"""scikit-learn estimators on the fused mixture kernels: ``GaussianMixture`` and ``BayesianGaussianMixture``.

Drop-in replacements for ``sklearn.mixture.GaussianMixture`` / ``BayesianGaussianMixture``: the same constructor
arguments, fitted attributes and methods, with the EM / variational iterations running on the fused E-step
(``mixture_stats``) and sufficient-statistics (``mixture_suffstats``) kernels through :func:`gmmkernels.fit_em` and
:func:`gmmkernels.fit_vb`. Three additions: ``device`` (where the fit runs: "cpu", "cuda", ...; default the input's
device), ``backend`` (the kernels' backend, as in ``fit_em``) and ``mixture_`` (the fitted
:class:`gmmkernels.GaussianMixture` module, on ``device``, ready for torch code).

Inputs are numpy arrays (validated by scikit-learn) or torch tensors (kept on their device; CUDA tensors never go
through numpy); methods return numpy for numpy input and torch tensors (on the input's device) for tensor input.
Fitted attributes are numpy arrays, as scikit-learn's. ``n_init`` restarts run as ONE batched fit (every restart is
an independent mixture of the same call), the best lower bound wins as in scikit-learn.

Initialisation: ``"random"``, ``"random_from_data"`` and ``"k-means++"`` draw exactly what scikit-learn draws from
the same ``random_state`` (so with those, the two libraries fit the same model); ``"kmeans"`` runs the package's
k-means (k-means++ seeding + Lloyd's iterations on the dispatcher kernel, :func:`gmmkernels.kmeans`) seeded from
``random_state``, not scikit-learn's ``KMeans``, so its starting point differs from scikit-learn's.

Differences from scikit-learn, all refused with a ValueError rather than silently changed:
``covariance_type="tied"`` (the fused kernels have no tied layout) and ``max_iter=0``. A ``warm_start`` refit
restarts the convergence test (scikit-learn compares the first new lower bound with the previous fit's), and
``lower_bounds_`` (the per-iteration history) is not recorded. Guide: docs/integrations/sklearn.md.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import require

require("sklearn", "sklearn", "sklearn")

from sklearn.base import BaseEstimator, DensityMixin  # noqa: E402
from sklearn.cluster import kmeans_plusplus as _sk_kmeans_plusplus  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils import check_random_state  # noqa: E402
from sklearn.utils.validation import check_is_fitted, validate_data  # noqa: E402

from .. import _validate as V  # noqa: E402
from ..fit import fit_em, fit_vb  # noqa: E402
from ..mixture import GaussianMixture as _TorchMixture  # noqa: E402

__all__ = ["BayesianGaussianMixture", "GaussianMixture"]

COVARIANCE_TYPES = ("full", "diag", "spherical")
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
_PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


def _store_params(est, args: dict) -> None:
    """Store an estimator's constructor arguments unchanged under their own names (scikit-learn's convention: no
    logic in ``__init__``; ``get_params`` reads them back by the signature's names)."""
    for name, value in args.items():
        if name != "self" and not name.startswith("__"):
            setattr(est, name, value)


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class _FusedMixtureBase(DensityMixin, BaseEstimator):
    """What both estimators share: argument checks, input conversion, the batched restarts, the attributes and the
    prediction methods. Subclasses give ``_run`` (one batched fit) and ``_e_step_logits`` (the E-step's log-weights)."""

    # -- checks ----------------------------------------------------------------------------------------------
    def _check_common(self, fn: str) -> None:
        V.integer(fn, "n_components", self.n_components, lo=1)
        if self.covariance_type == "tied":
            raise ValueError(f"{fn}: argument 'covariance_type'='tied' is not supported by the fused kernels "
                             f"(they have no shared-covariance layout); use one of {COVARIANCE_TYPES}")
        V.choice(fn, "covariance_type", self.covariance_type, COVARIANCE_TYPES)
        V.number(fn, "tol", self.tol, lo=0.0)
        V.number(fn, "reg_covar", self.reg_covar, lo=0.0)
        V.integer(fn, "max_iter", self.max_iter, lo=1, what="an int >= 1 (max_iter=0 is not supported)")
        V.integer(fn, "n_init", self.n_init, lo=1)
        V.choice(fn, "init_params", self.init_params, INIT_PARAMS)
        V.flag(fn, "warm_start", self.warm_start)
        V.integer(fn, "verbose_interval", self.verbose_interval, lo=1)

    # -- inputs and outputs ----------------------------------------------------------------------------------
    def _device(self, X) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return X.device if isinstance(X, Tensor) else torch.device("cpu")

    def _validate_X(self, X, *, reset: bool, fn: str) -> Tensor:
        """X as a 2-D floating tensor on the fit's device (float64 unless X is float32 / half)."""
        if not isinstance(X, Tensor):
            kw = {"ensure_min_samples": 2} if reset else {}
            X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], **kw)
            X = np.ascontiguousarray(X)
            x = torch.from_numpy(X if X.flags.writeable else X.copy())
        else:
            if X.dim() != 2:
                raise ValueError(f"{fn}: argument 'X' must be a 2-D tensor [n_samples, n_features], got shape "
                                 f"{tuple(X.shape)}")
            x = X.detach()
            if not x.is_floating_point():
                x = x.double()
            elif x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            if reset and x.shape[0] < 2:
                raise ValueError(f"{fn}: argument 'X' has {x.shape[0]} sample(s), but a minimum of 2 is required")
            if x.shape[0] < 1:
                raise ValueError(f"{fn}: argument 'X' has 0 samples")
            V.finite(fn, "X", x)
            if reset:
                self.n_features_in_ = int(x.shape[1])
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            elif x.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {x.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input.")
        if reset:
            return x.to(self._device(X))
        m = self.mixture_
        return x.to(device=m.means.device, dtype=m.means.dtype)

    @staticmethod
    def _out(t: Tensor, like):
        """numpy for numpy input, a tensor on the input's device for tensor input."""
        return t.to(like.device) if isinstance(like, Tensor) else _to_numpy(t)

    # -- initialisation --------------------------------------------------------------------------------------
    def _init_resp(self, x: Tensor, rs: np.random.RandomState) -> Optional[Tensor]:
        """Initial responsibilities [N, K] drawn as scikit-learn draws them from ``rs`` (None for "kmeans", which
        runs the package's k-means inside the fit)."""
        N, K = x.shape[0], self.n_components
        np_dtype = np.float32 if x.dtype == torch.float32 else np.float64
        if self.init_params == "kmeans":
            return None
        if self.init_params == "random":
            r = np.asarray(rs.uniform(size=(N, K)), dtype=np_dtype)
            r /= r.sum(axis=1)[:, None]
        else:
            r = np.zeros((N, K), dtype=np_dtype)
            if self.init_params == "random_from_data":
                idx = rs.choice(N, size=K, replace=False)
            else:  # "k-means++": scikit-learn's own seeding
                _, idx = _sk_kmeans_plusplus(_to_numpy(x).astype(np_dtype, copy=False), K, random_state=rs)
            r[idx, np.arange(K)] = 1
        return torch.from_numpy(r).to(device=x.device, dtype=x.dtype)

    # -- fit -------------------------------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Fit the mixture to X [n_samples, n_features] (``n_init`` restarts, the best lower bound kept)."""
        self.fit_predict(X, y)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return the most probable component of every sample of X (after a last E-step, as
        scikit-learn)."""
        fn = f"{type(self).__name__}.fit"
        self._check_params(fn)
        x = self._validate_X(X, reset=True, fn=fn)
        N = x.shape[0]
        if N < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                             f"n_samples = {N}")
        warm = bool(self.warm_start) and hasattr(self, "converged_")
        rs = check_random_state(self.random_state)
        n_init = 1 if warm else self.n_init
        if warm:
            init = self._warm_init(x)
            gen = None
        else:
            resps = [self._init_resp(x, rs) for _ in range(n_init)]
            init = "kmeans" if resps[0] is None else torch.stack(resps)
            gen = torch.Generator(device=x.device).manual_seed(int(rs.randint(np.iinfo(np.int32).max)))
        xb = x.unsqueeze(0).expand(n_init, *x.shape)
        res = self._run(xb, init, gen)
        best = int(torch.argmax(res.lower_bound))
        self._set_fitted(res, best, x)
        self.converged_ = bool(res.converged[best])
        self.n_iter_ = int(res.n_iter[best])
        self.lower_bound_ = float(res.lower_bound[best])
        if not self.converged_:
            warnings.warn("Best performing initialization did not converge. Try different init parameters, or "
                          "increase max_iter, tol, or check for degenerate data.", ConvergenceWarning)
        self._fitted_on_tensor = isinstance(X, Tensor)
        return self._out(self._resp(x).argmax(-1), X)

    def _set_fitted(self, res, best: int, x: Tensor) -> None:
        m = res.mixture
        pick = lambda t: t[best].detach().clone()  # noqa: E731
        self.mixture_ = _TorchMixture(pick(m.logits), pick(m.means), pick(m.scale), self.covariance_type)
        self._set_numpy_attributes()

    def _set_numpy_attributes(self) -> None:
        m = self.mixture_
        cov, L = self.covariance_type, m.scale
        self.weights_ = _to_numpy(m.weights)
        self.means_ = _to_numpy(m.means)
        if cov == "full":
            eye = torch.eye(m.D, dtype=L.dtype, device=L.device).expand_as(L)
            prec_chol = torch.linalg.solve_triangular(L, eye, upper=False).transpose(-1, -2)
            self.covariances_ = _to_numpy(L @ L.transpose(-1, -2))
            self.precisions_cholesky_ = _to_numpy(prec_chol)
            self.precisions_ = _to_numpy(prec_chol @ prec_chol.transpose(-1, -2))
        else:
            self.covariances_ = _to_numpy(L * L)
            self.precisions_cholesky_ = _to_numpy(L.reciprocal())
            self.precisions_ = _to_numpy((L * L).reciprocal())

    # -- prediction ------------------------------------------------------------------------------------------
    def _logits(self) -> Tensor:
        """Log-weights of the E-step (EM: log weights_; VB: the expected log-weights and normalisers)."""
        return self.mixture_.logits

    def _e_step_mixture(self) -> _TorchMixture:
        m = self.mixture_
        return _TorchMixture(self._logits(), m.means, m.scale, m.cov_type)

    def _resp(self, x: Tensor) -> Tensor:
        return self._e_step_mixture().responsibilities(x, backend=self.backend)

    def score_samples(self, X):
        """Log density of every sample under the fitted model [n_samples] (VB: scikit-learn's variational
        estimate)."""
        check_is_fitted(self)
        x = self._validate_X(X, reset=False, fn=f"{type(self).__name__}.score_samples")
        e = self._e_step_mixture()
        lp = e.log_prob(x, backend=self.backend)
        if e.logits is not self.mixture_.logits:  # the kernels normalise the logits; the variational density is not normalised
            lp = lp + torch.logsumexp(e.logits, -1)
        return self._out(lp, X)

    def score(self, X, y=None) -> float:
        """Mean log density of the samples of X."""
        s = self.score_samples(X)
        return float(s.double().mean()) if isinstance(s, Tensor) else float(np.mean(s))

    def predict(self, X):
        """The most probable component of every sample [n_samples]."""
        check_is_fitted(self)
        x = self._validate_X(X, reset=False, fn=f"{type(self).__name__}.predict")
        return self._out(self._resp(x).argmax(-1), X)

    def predict_proba(self, X):
        """The posterior probability of every component for every sample [n_samples, n_components]."""
        check_is_fitted(self)
        x = self._validate_X(X, reset=False, fn=f"{type(self).__name__}.predict_proba")
        return self._out(self._resp(x), X)

    def sample(self, n_samples: int = 1):
        """(X [n_samples, n_features], y [n_samples]) drawn from the fitted mixture, exactly as scikit-learn draws
        them (the numpy ``random_state``, components in order). Tensors on ``mixture_``'s device when the model was
        fitted on tensors."""
        check_is_fitted(self)
        if not isinstance(n_samples, (int, np.integer)) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least one "
                             "sample.")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        D = self.means_.shape[1]
        if self.covariance_type == "full":
            X = np.vstack([rng.multivariate_normal(mu, cov, int(n)) for mu, cov, n in
                           zip(self.means_, self.covariances_, counts)])
        else:
            X = np.vstack([mu + rng.standard_normal(size=(n, D)) * np.sqrt(cov) for mu, cov, n in
                           zip(self.means_, self.covariances_, counts)])
        y = np.concatenate([np.full(n, j, dtype=int) for j, n in enumerate(counts)])
        if self._fitted_on_tensor:
            dev = self.mixture_.means.device
            return torch.from_numpy(X).to(dev, self.mixture_.means.dtype), torch.from_numpy(y).to(dev)
        return X, y


class GaussianMixture(_FusedMixtureBase):
    """``sklearn.mixture.GaussianMixture`` on the fused kernels (EM by :func:`gmmkernels.fit_em`).

    Arguments as scikit-learn's (``covariance_type`` "full", "diag" or "spherical"), plus ``device`` (where the fit
    runs; default: the input's device) and ``backend`` (the kernels: "auto", "reference", "cpu", "cuda",
    "triton"). Attributes: ``weights_``, ``means_``, ``covariances_``, ``precisions_``, ``precisions_cholesky_``,
    ``converged_``, ``n_iter_``, ``lower_bound_``, ``n_features_in_`` (numpy, as scikit-learn) and ``mixture_`` (the
    fitted :class:`gmmkernels.GaussianMixture`)."""

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100, n_init=1,
                 init_params="kmeans", weights_init=None, means_init=None, precisions_init=None, random_state=None,
                 warm_start=False, verbose=0, verbose_interval=10, device=None, backend="auto"):
        _store_params(self, locals())

    def _check_params(self, fn: str) -> None:
        self._check_common(fn)

    def _user_init(self, x: Tensor) -> dict:
        """weights_init / means_init / precisions_init as tensors, shape-checked (scikit-learn's layouts)."""
        K, D = self.n_components, x.shape[1]
        fn = "GaussianMixture.fit"
        want = {"weights_init": (K,), "means_init": (K, D),
                "precisions_init": {"full": (K, D, D), "diag": (K, D), "spherical": (K,)}[self.covariance_type]}
        out = {}
        for name, shape in want.items():
            v = getattr(self, name)
            if v is None:
                continue
            t = torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v).to(x.device, x.dtype)
            V.shape(fn, name, t, shape)
            V.finite(fn, name, t)
            if name == "weights_init":
                if bool((t < 0).any()) or bool((t > 1).any()):
                    raise ValueError(f"{fn}: argument 'weights_init' must lie in [0, 1]")
                if not math.isclose(float(t.double().sum()), 1.0, rel_tol=0, abs_tol=1e-6):
                    raise ValueError(f"{fn}: argument 'weights_init' must sum to 1, got {float(t.sum()):.5f}")
            if name == "precisions_init":
                if self.covariance_type == "full":
                    sym = torch.allclose(t, t.transpose(-1, -2), atol=1e-8 * float(t.abs().max()))
                    if not sym or bool((torch.linalg.eigvalsh(t) <= 0).any()):
                        raise ValueError(f"{fn}: argument 'precisions_init' must be symmetric positive-definite")
                else:
                    V.positive(fn, name, t)
            out[name] = t
        return out

    def _run(self, xb: Tensor, init, gen):
        return fit_em(xb, self.n_components, self.covariance_type, max_iter=self.max_iter, tol=self.tol,
                      reg_covar=self.reg_covar, init=init, generator=gen, backend=self.backend,
                      **({} if isinstance(init, _TorchMixture) else self._user_init(xb[0])))

    def _warm_init(self, x: Tensor):
        m = self.mixture_
        return _TorchMixture(m.logits.to(x.device, x.dtype), m.means.to(x.device, x.dtype),
                             m.scale.to(x.device, x.dtype), m.cov_type)

    def _n_parameters(self) -> int:
        K, D = self.means_.shape
        cov = {"full": K * D * (D + 1) / 2.0, "diag": K * D, "spherical": K}[self.covariance_type]
        return int(cov + D * K + K - 1)

    def bic(self, X) -> float:
        """Bayesian information criterion of the fitted model on X (lower is better)."""
        return -2 * self.score(X) * X.shape[0] + self._n_parameters() * math.log(X.shape[0])

    def aic(self, X) -> float:
        """Akaike information criterion of the fitted model on X (lower is better)."""
        return -2 * self.score(X) * X.shape[0] + 2 * self._n_parameters()


class BayesianGaussianMixture(_FusedMixtureBase):
    """``sklearn.mixture.BayesianGaussianMixture`` on the fused kernels (variational Bayes by
    :func:`gmmkernels.fit_vb`).

    Arguments and attributes as scikit-learn's (``weight_concentration_prior_``, ``weight_concentration_``,
    ``mean_precision_prior_``, ``mean_precision_``, ``mean_prior_``, ``degrees_of_freedom_prior_``,
    ``degrees_of_freedom_``, ``covariance_prior_`` besides those of :class:`GaussianMixture`), plus ``device`` and
    ``backend``. ``predict``, ``predict_proba`` and ``score_samples`` use the variational E-step, as scikit-learn's."""

    def __init__(self, *, n_components=1, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100, n_init=1,
                 init_params="kmeans", weight_concentration_prior_type="dirichlet_process",
                 weight_concentration_prior=None, mean_precision_prior=None, mean_prior=None,
                 degrees_of_freedom_prior=None, covariance_prior=None, random_state=None, warm_start=False,
                 verbose=0, verbose_interval=10, device=None, backend="auto"):
        _store_params(self, locals())

    def _check_params(self, fn: str) -> None:
        self._check_common(fn)
        V.choice(fn, "weight_concentration_prior_type", self.weight_concentration_prior_type, _PRIOR_TYPES)
        for name in ("weight_concentration_prior", "mean_precision_prior"):
            if getattr(self, name) is not None:
                V.number(fn, name, getattr(self, name), lo=0.0, lo_open=True)
        if self.degrees_of_freedom_prior is not None:
            V.number(fn, "degrees_of_freedom_prior", self.degrees_of_freedom_prior)

    def _priors(self, x: Tensor) -> dict:
        """The priors scikit-learn would use on x (its defaults where an argument is None), as tensors."""
        fn = "BayesianGaussianMixture.fit"
        N, D = x.shape
        as_t = lambda v: torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v).to(x.device, x.dtype)  # noqa: E731
        xc = x - x.mean(0)
        mp = x.mean(0) if self.mean_prior is None else as_t(self.mean_prior).reshape(-1)
        V.shape(fn, "mean_prior", mp, (D,))
        dof = float(D) if self.degrees_of_freedom_prior is None else float(self.degrees_of_freedom_prior)
        if dof <= D - 1:
            raise ValueError(f"{fn}: argument 'degrees_of_freedom_prior' must be > n_features - 1 = {D - 1}, got {dof}")
        if self.covariance_prior is None:
            var = (xc * xc).sum(0) / max(N - 1, 1)
            cp = {"full": xc.T @ xc / max(N - 1, 1), "diag": var, "spherical": var.mean()}[self.covariance_type]
        else:
            cp = as_t(self.covariance_prior)
            want = {"full": (D, D), "diag": (D,), "spherical": ()}[self.covariance_type]
            V.shape(fn, "covariance_prior", cp, want)
            if self.covariance_type == "full":
                if bool((torch.linalg.eigvalsh(cp) <= 0).any()):
                    raise ValueError(f"{fn}: argument 'covariance_prior' must be symmetric positive-definite")
            else:
                V.positive(fn, "covariance_prior", cp)
        wcp = 1.0 / self.n_components if self.weight_concentration_prior is None else float(self.weight_concentration_prior)
        mpp = 1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior)
        return {"weight_concentration_prior": wcp, "mean_precision_prior": mpp, "mean_prior": mp,
                "degrees_of_freedom_prior": dof, "covariance_prior": cp}

    def _run(self, xb: Tensor, init, gen):
        self._prior_args = self._priors(xb[0])
        priors = dict(self._prior_args)
        if self.covariance_prior is None:
            # fit_vb computes the same default from the data, and (as scikit-learn) accepts it when a feature is
            # constant, while an explicit covariance prior must be positive
            priors["covariance_prior"] = None
        return fit_vb(xb, self.n_components, self.covariance_type,
                      weight_concentration_prior_type=self.weight_concentration_prior_type,
                      max_iter=self.max_iter, tol=self.tol, reg_covar=self.reg_covar, init=init, generator=gen,
                      backend=self.backend, **priors)

    def _warm_init(self, x: Tensor) -> Tensor:
        # the previous fit's responsibilities: fit_vb's first M-step on them is the next VB iteration
        return self._resp(x).unsqueeze(0)

    def _set_fitted(self, res, best: int, x: Tensor) -> None:
        super()._set_fitted(res, best, x)
        ex = res.extras
        pick = lambda t: t[best].detach().clone()  # noqa: E731
        wc = ex["weight_concentration"]
        self._wc = tuple(pick(t) for t in wc) if isinstance(wc, tuple) else pick(wc)
        self._mean_precision = pick(ex["mean_precision"])
        self._dof = pick(ex["degrees_of_freedom"])
        self.weight_concentration_ = tuple(_to_numpy(t) for t in self._wc) if isinstance(self._wc, tuple) \
            else _to_numpy(self._wc)
        self.mean_precision_ = _to_numpy(self._mean_precision)
        self.degrees_of_freedom_ = _to_numpy(self._dof)
        p = self._prior_args
        self.weight_concentration_prior_ = p["weight_concentration_prior"]
        self.mean_precision_prior_ = p["mean_precision_prior"]
        self.mean_prior_ = _to_numpy(p["mean_prior"])
        self.degrees_of_freedom_prior_ = p["degrees_of_freedom_prior"]
        cp = _to_numpy(p["covariance_prior"])
        self.covariance_prior_ = float(cp) if self.covariance_type == "spherical" else cp
        del self._prior_args

    def _logits(self) -> Tensor:
        """scikit-learn's ``_estimate_log_weights`` + the log-prob's variational terms: E[log pi_k]
        - D/2 log nu_k + (log Lambda_k - D / beta_k) / 2, log Lambda_k = D log 2 + sum_i digamma((nu_k - i) / 2)."""
        wc, nu, beta = self._wc, self._dof, self._mean_precision
        D = self.mixture_.D
        if isinstance(wc, tuple):
            a, b = wc
            ds = torch.digamma(a + b)
            da, db = torch.digamma(a) - ds, torch.digamma(b) - ds
            elw = da + torch.cat([torch.zeros_like(db[:1]), db.cumsum(-1)[:-1]])
        else:
            elw = torch.digamma(wc) - torch.digamma(wc.sum())
        ar = torch.arange(D, dtype=nu.dtype, device=nu.device)
        log_lambda = D * math.log(2.0) + torch.digamma(0.5 * (nu[:, None] - ar)).sum(-1)
        return elw - 0.5 * D * torch.log(nu) + 0.5 * (log_lambda - D / beta)
