"""What EM and VB share: argument checks, the M-step helpers (means and covariances from sufficient statistics, scales
from covariances), the initial responsibilities and the per-mixture convergence bookkeeping."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import _validate as V
from ..mixture import GaussianMixture
from ..reference.mixture_em_stats import em_covariances

COV_TYPES = V.COV_TYPES
INITS = ("kmeans", "k-means++", "random")


class FitResult(NamedTuple):
    """Result of :func:`fit_em` / :func:`fit_vb`. Per-mixture tensors have the data's batch shape."""

    mixture: GaussianMixture  # fitted mixture (weights, means, covariances in the original coordinates)
    lower_bound: Tensor  # EM: mean log-likelihood; VB: ELBO (scikit-learn's ``lower_bound_``)
    n_iter: Tensor  # iterations run, per mixture
    converged: Tensor  # |change of lower bound| < tol, per mixture
    extras: dict  # VB: posterior hyper-parameters (weight_concentration, mean_precision, degrees_of_freedom, ...)


def check_data(fn: str, x, *, layout: str = "[..., N, D]", ranks=None) -> Tensor:
    """Data to fit: a floating tensor with values (not meta), of rank >= 2 (or one of ``ranks``), with D > 0 and
    finite values."""
    V.tensor(fn, "x", x)
    V.values(fn, "x", x)
    if (x.dim() not in ranks) if ranks else x.dim() < 2:
        raise ValueError(f"{fn}: argument 'x' must have shape {layout}, got {list(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError(f"{fn}: argument 'x' has D=0 dimensions")
    V.finite(fn, "x", x)
    return x


def check_components(fn: str, K, N: int, name: str = "n_components") -> int:
    """1 <= K <= N (a mixture of K components needs K points to start from)."""
    K = V.integer(fn, name, K, lo=1, what="a positive int")
    if K > N:
        raise ValueError(f"{fn}: {name}={K} exceeds the number of points N={N}")
    return K


def check_fit_inputs(fn: str, x: Tensor, K: int, cov_type: str, max_iter: int, tol: float, reg_covar: float,
                     generator=None, init="kmeans", mixture_init: bool = False) -> None:
    """The arguments EM and VB share (``init``: a method name, responsibilities [..., N, K], or, when
    ``mixture_init``, a GaussianMixture)."""
    check_data(fn, x)
    V.choice(fn, "cov_type", cov_type, COV_TYPES)
    check_components(fn, K, x.shape[-2])
    V.integer(fn, "max_iter", max_iter, lo=1)
    V.number(fn, "tol", tol, lo=0.0)
    V.number(fn, "reg_covar", reg_covar, lo=0.0)
    V.generator(fn, "generator", generator)
    batch, N = x.shape[:-2], x.shape[-2]
    if isinstance(init, str):
        V.choice(fn, "init", init, INITS)
    elif isinstance(init, Tensor):
        V.tensors(fn, [("x", x), ("init", init)], same_dtype=False)
        V.batched(fn, "init", init, batch, (N, K), "[..., N, K] (responsibilities)")
        V.nonnegative(fn, "init", init)
    elif not (mixture_init and isinstance(init, GaussianMixture)):
        what = "a GaussianMixture, " if mixture_init else ""
        raise TypeError(f"{fn}: argument 'init' must be one of {INITS}, {what}or responsibilities [..., N, K], got "
                        f"{type(init).__name__}")


def check_param(fn: str, name: str, t, x: Tensor, tail, layout: str) -> None:
    """An optional per-mixture parameter (an initial value or a prior): None, or a floating tensor on the device of
    ``x`` of shape [*b, *tail] with b broadcasting to the data's batch shape, with finite values."""
    if t is None:
        return
    V.tensors(fn, [("x", x), (name, t)], same_dtype=False)
    V.batched(fn, name, t, x.shape[:-2], tail, layout)
    V.finite(fn, name, t)


def check_precisions(fn: str, name: str, t, x: Tensor, cov_type: str, K: Optional[int]) -> None:
    """Precisions or covariances in scikit-learn's layout, per component (``K``) or one for all (a prior, K=None):
    diag [..., (K,) D] and spherical [..., (K)] positive, full [..., (K,) D, D] symmetric positive definite."""
    if t is None:
        return
    D = x.shape[-1]
    lead, k = ((K,), ", K") if K is not None else ((), "")
    tail, dims = {"diag": ((D,), ", D"), "spherical": ((), ""), "full": ((D, D), ", D, D")}[cov_type]
    check_param(fn, name, t, x, lead + tail, f"[...{k}{dims}]")
    if cov_type == "full":
        V.spd(fn, name, t)
    else:
        V.positive(fn, name, t)


def check_em_init(fn: str, x: Tensor, K: int, cov_type: str, weights_init, means_init, precisions_init) -> None:
    """scikit-learn's ``weights_init`` [..., K] (non-negative, summing to 1), ``means_init`` [..., K, D] and
    ``precisions_init`` (diag [..., K, D], spherical [..., K], full [..., K, D, D] symmetric positive definite)."""
    D = x.shape[-1]
    check_param(fn, "weights_init", weights_init, x, (K,), "[..., K]")
    if weights_init is not None:
        V.nonnegative(fn, "weights_init", weights_init)
        if V.values_enabled() and weights_init.device.type != "meta":
            tol = torch.finfo(weights_init.dtype).eps ** 0.5
            if bool(((weights_init.sum(-1) - 1).abs() > tol).any()):
                raise ValueError(f"{fn}: argument 'weights_init' must sum to 1 over the K components")
    check_param(fn, "means_init", means_init, x, (K, D), "[..., K, D]")
    check_precisions(fn, "precisions_init", precisions_init, x, cov_type, K)


def check_vb_priors(fn: str, x: Tensor, cov_type: str, prior_type, weight_concentration_prior, mean_precision_prior,
                    mean_prior, degrees_of_freedom_prior, covariance_prior) -> None:
    """scikit-learn's ``BayesianGaussianMixture`` priors: positive concentration and mean precision, a finite mean
    prior [..., D], degrees of freedom > D - 1, a positive (definite) covariance prior."""
    D = x.shape[-1]
    V.choice(fn, "weight_concentration_prior_type", prior_type, ("dirichlet_process", "dirichlet_distribution"))
    for name, v in (("weight_concentration_prior", weight_concentration_prior),
                    ("mean_precision_prior", mean_precision_prior)):
        if v is not None:
            V.number(fn, name, v, lo=0.0, lo_open=True, what="None or a positive finite number")
    if degrees_of_freedom_prior is not None:
        V.number(fn, "degrees_of_freedom_prior", degrees_of_freedom_prior, lo=D - 1.0, lo_open=True,
                 what=f"None or a finite number > D - 1 = {D - 1}")
    check_param(fn, "mean_prior", mean_prior, x, (D,), "[..., D]")
    check_precisions(fn, "covariance_prior", covariance_prior, x, cov_type, None)


def covariances(nk, sx, sxx, cov_type, reg_covar):
    """(n_k, means, covariances) from sufficient statistics, scikit-learn's ``_estimate_gaussian_parameters`` (the
    host M-step: gmmkernels/reference/mixture_em_stats.py, em_covariances)."""
    return em_covariances(nk, sx, sxx, cov_type, reg_covar)


def scale_from_cov(fn: str, cov: Tensor, cov_type: str) -> Tensor:
    if cov_type == "full":
        L, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):
            raise ValueError(
                f"{fn}: fitting failed because some components have ill-defined (singular) empirical covariance, for "
                "example collapsed samples or duplicate points. Increase 'reg_covar', decrease 'n_components', or scale the data."
            )
        return L
    if bool((cov <= 0).any()):
        raise ValueError(
            f"{fn}: fitting failed because some components have non-positive variance (degenerate data with reg_covar=0). "
            "Increase 'reg_covar'."
        )
    return cov.sqrt()


def scale_from_precision(P: Tensor, cov_type: str) -> Tensor:
    if cov_type == "full":
        return torch.linalg.cholesky(torch.linalg.inv(P))
    return P.rsqrt()


def init_resp(x3: Tensor, K: int, init: str, generator, fn: str, backend: str = "auto") -> Tensor:
    """Initial responsibilities [B, N, K] of x3 [B, N, D]: 'random' (normalised uniforms), 'k-means++' (one-hot at the
    seeds) or 'kmeans' (hard labels after k-means++ seeding and Lloyd's iterations)."""
    from .kmeans import kmeans_plusplus, lloyd  # kmeans.py imports the checks of this module

    B, N, D = x3.shape
    if init == "random":
        r = torch.rand(B, N, K, generator=generator, dtype=x3.dtype, device=x3.device)
        return r / r.sum(-1, keepdim=True)
    if init not in ("k-means++", "kmeans"):
        raise ValueError(f"{fn}: argument 'init' must be 'kmeans', 'k-means++', 'random', a GaussianMixture or resp, got {init!r}")
    idx = kmeans_plusplus(x3, K, generator)
    if init == "k-means++":  # scikit-learn's init_params='k-means++': one-hot at the seeds only
        r = torch.zeros(B, N, K, dtype=x3.dtype, device=x3.device)
        r[torch.arange(B, device=x3.device)[:, None], idx, torch.arange(K, device=x3.device)] = 1
        return r
    # 'kmeans': k-means++ seeds + Lloyd iterations, hard labels (scikit-learn's default init_params='kmeans')
    c0 = x3[torch.arange(B, device=x3.device)[:, None], idx]
    _, lab, _ = lloyd(x3, c0, max_iter=100, tol=0.0, backend=backend)
    return torch.nn.functional.one_hot(lab, K).to(x3.dtype)


class Convergence:
    """Per-mixture bookkeeping of an iterative fit: the lower bound, the iteration count and the converged flags of
    B mixtures. Converged mixtures stop updating (``keep`` selects their old values). Until some mixture converges,
    every mixture shares the iteration count, which is kept as a number (``n_iter`` builds the tensor on demand)."""

    def __init__(self, B: int, dtype, device, tol: float):
        self.lower = torch.full((B,), -math.inf, dtype=dtype, device=device)
        self._n_iter = torch.zeros(B, dtype=torch.long, device=device)
        self._it = None  # the shared count while no mixture has converged (None: _n_iter holds the counts)
        self.converged = torch.zeros(B, dtype=torch.bool, device=device)
        self.tol = tol
        self.any_converged = False  # as of the last update (keep() is then the identity)

    @property
    def n_iter(self) -> Tensor:
        """Iterations run, per mixture [B]."""
        if self._it is not None:
            self._n_iter, self._it = torch.full_like(self._n_iter, self._it), None
        return self._n_iter

    def keep(self, new: Tensor, old: Tensor) -> Tensor:
        """``new`` for the mixtures still active, ``old`` for the converged ones (leading dimension B)."""
        if not self.any_converged:
            return new
        active = ~self.converged
        return torch.where(active.view(-1, *([1] * (new.dim() - 1))), new, old)

    def record(self, it: int, lower: Tensor, converged: Tensor) -> bool:
        """Record the state after iteration ``it`` of iterations run elsewhere (the native EM loop) while every
        mixture was active: its lower bounds and converged flags [B]. True when every mixture has converged."""
        self.lower, self._it, self.converged = lower, it, converged
        self.any_converged = bool(converged.any())
        return self.any_converged and bool(converged.all())

    def update(self, it: int, lb: Tensor) -> bool:
        """Record iteration ``it`` with lower bounds ``lb`` [B] (a fresh tensor the caller does not modify
        afterwards); True when every mixture has converged."""
        change = lb - self.lower
        if self.any_converged:
            active = ~self.converged
            self.lower = torch.where(active, lb, self.lower)
            self._n_iter = torch.where(active, torch.full_like(self.n_iter, it), self.n_iter)
            self.converged = self.converged | (active & (change.abs() < self.tol))
            return bool(self.converged.all())
        # every mixture active: the same values with fewer operations, and one read of the flags
        self.lower = lb.to(self.lower.dtype)
        self._it = it
        self.converged = change.abs() < self.tol
        self.any_converged = bool(self.converged.any())
        return self.any_converged and bool(self.converged.all())
