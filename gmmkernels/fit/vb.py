"""Batched variational Bayes for Gaussian mixtures, with scikit-learn's ``BayesianGaussianMixture`` arithmetic
(sklearn/mixture/_bayesian_mixture.py): Dirichlet or Dirichlet-process weights, Normal-Wishart / Normal-Gamma
means and precisions. The E-step is the fused ``mixture_stats`` with the expected log-weights and precisions, the
M-step the fused ``mixture_suffstats``; shared helpers in gmmkernels/fit/_common.py.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from ..mixture import GaussianMixture
from ..ops.mixture_stats import mixture_stats
from ..ops.mixture_suffstats import mixture_suffstats
from ._common import Convergence, FitResult, check_fit_inputs, check_vb_priors, covariances, init_resp, scale_from_cov
from .em import step_backends


def fit_vb(
    x: Tensor,
    n_components: int,
    cov_type: str = "diag",
    *,
    weight_concentration_prior_type: str = "dirichlet_process",
    weight_concentration_prior: Optional[float] = None,
    mean_precision_prior: Optional[float] = None,
    mean_prior: Optional[Tensor] = None,
    degrees_of_freedom_prior: Optional[float] = None,
    covariance_prior: Optional[Tensor] = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: Union[str, Tensor] = "kmeans",
    generator: Optional[torch.Generator] = None,
    backend: str = "auto",
) -> FitResult:
    """Variational Bayes for a Gaussian mixture on each data set of x [..., N, D].

    Weights: Dirichlet distribution or (truncated, stick-breaking) Dirichlet process; means and precisions:
    Normal-Wishart ('full'), Normal-Gamma per dimension ('diag') or per component ('spherical'), with scikit-learn's
    defaults (weight concentration 1/K, mean precision 1, mean prior = data mean, dof = D, covariance prior = data
    covariance / variance). The returned mixture holds the posterior-mean weights, the means and the covariances
    (the scale matrices W^-1 / nu, as scikit-learn's ``covariances_``). ``extras`` holds the hyper-parameters.
    ``backend`` selects the kernels of both steps, as in :func:`gmmkernels.fit_em`.
    """
    fn = "fit_vb"
    K = n_components
    check_fit_inputs(fn, x, K, cov_type, max_iter, tol, reg_covar, generator, init)
    check_vb_priors(fn, x, cov_type, weight_concentration_prior_type, weight_concentration_prior, mean_precision_prior,
                    mean_prior, degrees_of_freedom_prior, covariance_prior)
    e_backend, s_backend = step_backends(fn, backend)
    batch, N, D = x.shape[:-2], x.shape[-2], x.shape[-1]
    B = math.prod(batch)
    dt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    dev = x.device
    x3 = x.to(dt).reshape(B, N, D)
    shift = x3.mean(1, keepdim=True)
    xc = x3 - shift
    full = cov_type == "full"
    dp = weight_concentration_prior_type == "dirichlet_process"
    wcp = 1.0 / K if weight_concentration_prior is None else float(weight_concentration_prior)
    mpp = 1.0 if mean_precision_prior is None else float(mean_precision_prior)
    m0 = (torch.zeros(B, D, dtype=dt, device=dev) if mean_prior is None
          else mean_prior.to(dt).expand(*batch, D).reshape(B, D) - shift[:, 0])
    dofp = float(D) if degrees_of_freedom_prior is None else float(degrees_of_freedom_prior)
    if covariance_prior is None:
        if full:
            covp = xc.transpose(1, 2) @ xc / max(N - 1, 1)  # np.cov (ddof=1)
        else:
            covp = (xc * xc).sum(1) / max(N - 1, 1)  # np.var(ddof=1), as scikit-learn
            if cov_type == "spherical":
                covp = covp.mean(-1)
    else:
        tail = (D, D) if full else (D,) if cov_type == "diag" else ()
        covp = covariance_prior.to(dt).expand(*batch, *tail).reshape(B, *tail)

    if isinstance(init, Tensor):
        resp = init.to(dt).expand(*batch, N, K).reshape(B, N, K)
    else:
        resp = init_resp(xc, K, init, generator, fn, e_backend)

    lgamma, digamma = torch.lgamma, torch.digamma
    ar = torch.arange(D, dtype=dt, device=dev)

    def m_step(resp):
        nk, sx, sxx = mixture_suffstats(xc, resp, full, backend=s_backend)
        nk, xk, sk = covariances(nk, sx, sxx, cov_type, reg_covar)
        if dp:
            tail = nk.flip(-1).cumsum(-1).flip(-1)
            wc = (1.0 + nk, wcp + torch.cat([tail[:, 1:], torch.zeros_like(tail[:, :1])], -1))
        else:
            wc = wcp + nk
        mp = mpp + nk
        means = (mpp * m0[:, None] + nk[..., None] * xk) / mp[..., None]
        dof = dofp + nk
        diff = xk - m0[:, None]
        if full:
            cov = covp[:, None] + nk[..., None, None] * sk + (nk * mpp / mp)[..., None, None] * diff[..., :, None] * diff[..., None, :]
            cov = cov / dof[..., None, None]
        elif cov_type == "diag":
            cov = (covp[:, None] + nk[..., None] * (sk + (mpp / mp)[..., None] * diff * diff)) / dof[..., None]
        else:
            cov = (covp[:, None] + nk * (sk + mpp / mp * (diff * diff).mean(-1))) / dof
        return wc, mp, means, dof, cov

    def log_det_prec_chol(scale):
        if full:
            return -torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
        if cov_type == "diag":
            return -torch.log(scale).sum(-1)
        return -D * torch.log(scale)

    def e_log_weights(wc):
        if dp:
            a, b = wc
            ds = digamma(a + b)
            da, db = digamma(a) - ds, digamma(b) - ds
            return da + torch.cat([torch.zeros_like(db[:, :1]), db.cumsum(-1)[:, :-1]], -1)
        return digamma(wc) - digamma(wc.sum(-1, keepdim=True))

    wc, mp, means, dof, cov = m_step(resp)
    conv = Convergence(B, dt, dev, tol)
    state = (wc, mp, means, dof, cov)
    for it in range(1, max_iter + 1):
        wc, mp, means, dof, cov = state
        scale = scale_from_cov(fn, cov, cov_type)
        log_lambda = D * math.log(2.0) + digamma(0.5 * (dof[..., None] - ar)).sum(-1)
        c = e_log_weights(wc) - 0.5 * D * torch.log(dof) + 0.5 * (log_lambda - D / mp)
        st = mixture_stats(xc, c, means, scale, cov_type, with_score=False, with_resp=True, backend=e_backend)
        resp = st.responsibilities
        new = m_step(resp)
        wc2, mp2, means2, dof2, cov2 = new
        scale2 = scale_from_cov(fn, cov2, cov_type)
        ldp = log_det_prec_chol(scale2) - 0.5 * D * torch.log(dof2)
        log_wishart = -(dof2 * ldp + dof2 * D * 0.5 * math.log(2.0) + lgamma(0.5 * (dof2[..., None] - ar)).sum(-1)).sum(-1)
        if dp:
            a, b = wc2
            log_norm_w = -(lgamma(a) + lgamma(b) - lgamma(a + b)).sum(-1)
        else:
            log_norm_w = lgamma(wc2.sum(-1)) - lgamma(wc2).sum(-1)
        ent = -(resp * torch.log(resp.clamp_min(torch.finfo(dt).tiny))).sum((-1, -2))
        lb = ent - log_wishart - log_norm_w - 0.5 * D * torch.log(mp2).sum(-1)
        sel = conv.keep
        if dp:
            wcs = (sel(wc2[0], wc[0]), sel(wc2[1], wc[1]))
        else:
            wcs = sel(wc2, wc)
        state = (wcs, sel(mp2, mp), sel(means2, means), sel(dof2, dof), sel(cov2, cov))
        if conv.update(it, lb):
            break
    wc, mp, means, dof, cov = state
    if dp:
        a, b = wc
        w = a / (a + b)
        w = w * torch.cat([torch.ones_like(w[:, :1]), (b / (a + b)).cumprod(-1)[:, :-1]], -1)
        w = w / w.sum(-1, keepdim=True)
    else:
        w = wc / wc.sum(-1, keepdim=True)
    scale = scale_from_cov(fn, cov, cov_type)
    mix = GaussianMixture(w.log().reshape(*batch, K), (means + shift).reshape(*batch, K, D),
                          scale.reshape(*batch, *scale.shape[1:]), cov_type)
    rs = lambda t: t.reshape(*batch, *t.shape[1:])  # noqa: E731
    extras = {
        "weight_concentration": tuple(rs(t) for t in wc) if dp else rs(wc),
        "mean_precision": rs(mp),
        "degrees_of_freedom": rs(dof),
        "weights": rs(w),
    }
    return FitResult(mix, conv.lower.reshape(batch), conv.n_iter.reshape(batch), conv.converged.reshape(batch), extras)
