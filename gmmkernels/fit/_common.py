"""What EM and VB share: argument checks, the M-step helpers (means and covariances from sufficient statistics, scales
from covariances), the initial responsibilities and the per-mixture convergence bookkeeping."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import _validate as V
from ..mixture import GaussianMixture
from .kmeans import kmeans_plusplus, lloyd

COV_TYPES = V.COV_TYPES


class FitResult(NamedTuple):
    """Result of :func:`fit_em` / :func:`fit_vb`. Per-mixture tensors have the data's batch shape."""

    mixture: GaussianMixture  # fitted mixture (weights, means, covariances in the original coordinates)
    lower_bound: Tensor  # EM: mean log-likelihood; VB: ELBO (scikit-learn's ``lower_bound_``)
    n_iter: Tensor  # iterations run, per mixture
    converged: Tensor  # |change of lower bound| < tol, per mixture
    extras: dict  # VB: posterior hyper-parameters (weight_concentration, mean_precision, degrees_of_freedom, ...)


def check_fit_inputs(fn: str, x: Tensor, K: int, cov_type: str, max_iter: int, tol: float, reg_covar: float) -> None:
    V.tensor(fn, "x", x)
    if x.dim() < 2:
        raise ValueError(f"{fn}: argument 'x' must have shape [..., N, D], got {tuple(x.shape)}")
    V.choice(fn, "cov_type", cov_type, COV_TYPES)
    V.integer(fn, "n_components", K, lo=1, what="a positive int")
    N = x.shape[-2]
    if K > N:
        raise ValueError(f"{fn}: n_components={K} exceeds the number of points N={N}")
    if x.shape[-1] == 0:
        raise ValueError(f"{fn}: argument 'x' has D=0 dimensions")
    V.finite(fn, "x", x)
    V.integer(fn, "max_iter", max_iter, lo=1)
    V.number(fn, "tol", tol, lo=0.0)
    V.number(fn, "reg_covar", reg_covar, lo=0.0)


def covariances(nk, sx, sxx, cov_type, reg_covar):
    """Means and covariances from sufficient statistics, scikit-learn's ``_estimate_gaussian_parameters``."""
    eps = 10 * torch.finfo(nk.dtype).eps
    nk = nk + eps
    mu = sx / nk[..., None]
    low = nk.dtype != torch.float64  # one-pass E[x^2] - E[x]^2 can go slightly negative by rounding: clamp / project
    if cov_type == "full":
        D = mu.shape[-1]
        cov = sxx / nk[..., None, None] - mu[..., :, None] * mu[..., None, :]
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        if low:
            lam, Q = torch.linalg.eigh(cov)
            cov = (Q * lam.clamp_min(0).unsqueeze(-2)) @ Q.transpose(-1, -2)
        cov = cov + reg_covar * torch.eye(D, dtype=mu.dtype, device=mu.device)
    else:
        cov = sxx / nk[..., None] - mu * mu
        cov = (cov.clamp_min(0) if low else cov) + reg_covar
        if cov_type == "spherical":
            cov = cov.mean(-1)
    return nk, mu, cov


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
    B mixtures. Converged mixtures stop updating (``keep`` selects their old values)."""

    def __init__(self, B: int, dtype, device, tol: float):
        self.lower = torch.full((B,), -math.inf, dtype=dtype, device=device)
        self.n_iter = torch.zeros(B, dtype=torch.long, device=device)
        self.converged = torch.zeros(B, dtype=torch.bool, device=device)
        self.tol = tol

    def keep(self, new: Tensor, old: Tensor) -> Tensor:
        """``new`` for the mixtures still active, ``old`` for the converged ones (leading dimension B)."""
        active = ~self.converged
        return torch.where(active.view(-1, *([1] * (new.dim() - 1))), new, old)

    def update(self, it: int, lb: Tensor) -> bool:
        """Record iteration ``it`` with lower bounds ``lb`` [B]; True when every mixture has converged."""
        active = ~self.converged
        change = lb - self.lower
        self.lower = torch.where(active, lb, self.lower)
        self.n_iter = torch.where(active, torch.full_like(self.n_iter, it), self.n_iter)
        self.converged = self.converged | (active & (change.abs() < self.tol))
        return bool(self.converged.all())
