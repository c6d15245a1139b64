"""Batched variational Bayes for Gaussian mixtures, with scikit-learn's ``BayesianGaussianMixture`` arithmetic
(sklearn/mixture/_bayesian_mixture.py): Dirichlet or Dirichlet-process weights, Normal-Wishart / Normal-Gamma
means and precisions. One iteration is one pass of the fused ``mixture_em_stats`` (E-step with the expected
log-weights and precisions, the responsibility entropy and the sufficient statistics together) and the closed-form
M-step of :class:`VBModel`; the same iteration runs on chunked or distributed data (gmmkernels/fit/chunked.py).
Shared helpers in gmmkernels/fit/_common.py.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from ..mixture import GaussianMixture
from ..ops.mixture_suffstats import mixture_suffstats
from ._common import Convergence, FitResult, check_fit_inputs, check_vb_priors, covariances, init_resp, scale_from_cov
from ._data import InMemory, pass_backend
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

    def second_moment():
        return (xc.transpose(1, 2) @ xc if full else (xc * xc).sum(1)), N

    model = build_vb_model(cov_type, K, D, batch, shift, reg_covar, second_moment,
                           weight_concentration_prior_type=weight_concentration_prior_type,
                           weight_concentration_prior=weight_concentration_prior,
                           mean_precision_prior=mean_precision_prior, mean_prior=mean_prior,
                           degrees_of_freedom_prior=degrees_of_freedom_prior, covariance_prior=covariance_prior)
    if isinstance(init, Tensor):
        resp = init.to(dt).expand(*batch, N, K).reshape(B, N, K)
    else:
        resp = init_resp(xc, K, init, generator, fn, e_backend)
    state = model.m_step(*mixture_suffstats(xc, resp, full, backend=s_backend))
    data = InMemory(xc, pass_backend(fn, backend, dev, dt, cov_type, D))
    conv = Convergence(B, dt, dev, tol)
    state = vb_iterations(fn, data, model, state, conv, max_iter)
    return vb_result(fn, model, state, shift, batch, conv)


def build_vb_model(cov_type, K, D, batch, shift, reg_covar, second_moment, *, weight_concentration_prior_type,
                   weight_concentration_prior, mean_precision_prior, mean_prior, degrees_of_freedom_prior,
                   covariance_prior) -> "VBModel":
    """The VBModel of the prior arguments of :func:`fit_vb` with scikit-learn's defaults, in the coordinates shifted
    by ``shift`` [B, 1, D]. ``second_moment()`` -> (sum of xc xc^T [B, D, D] (full) or of xc^2 [B, D], n), the
    centred data's second moment, called only for the default covariance prior (np.cov / np.var with ddof=1)."""
    B, dt, dev = shift.shape[0], shift.dtype, shift.device
    full = cov_type == "full"
    m0 = (torch.zeros(B, D, dtype=dt, device=dev) if mean_prior is None
          else mean_prior.to(dt).expand(*batch, D).reshape(B, D) - shift[:, 0])
    if covariance_prior is None:
        s2, n = second_moment()
        covp = (s2 / max(n - 1, 1)).to(dt)
        if cov_type == "spherical":
            covp = covp.mean(-1)
    else:
        tail = (D, D) if full else (D,) if cov_type == "diag" else ()
        covp = covariance_prior.to(dt).expand(*batch, *tail).reshape(B, *tail)
    return VBModel(cov_type, K, D, weight_concentration_prior_type == "dirichlet_process",
                   1.0 / K if weight_concentration_prior is None else float(weight_concentration_prior),
                   1.0 if mean_precision_prior is None else float(mean_precision_prior), m0,
                   float(D) if degrees_of_freedom_prior is None else float(degrees_of_freedom_prior), covp, reg_covar)


class VBModel:
    """The conjugate model of :func:`fit_vb` (priors in the centred coordinates, per mixture): its M-step from
    sufficient statistics, the expected log-weights and log-precision terms of the E-step, and the lower bound.
    A state is (weight concentration, mean precision beta [B, K], means [B, K, D], dof nu [B, K], covariances
    W^-1 / nu); the weight concentration is a pair (gamma_1, gamma_2) for the Dirichlet process, else alpha [B, K]."""

    def __init__(self, cov_type, K, D, dp, wcp, mpp, m0, dofp, covp, reg_covar):
        self.cov_type, self.K, self.D, self.dp = cov_type, K, D, dp
        self.wcp, self.mpp, self.m0, self.dofp, self.covp, self.reg_covar = wcp, mpp, m0, dofp, covp, reg_covar
        self.ar = torch.arange(D, dtype=m0.dtype, device=m0.device)

    def m_step(self, nk, sx, sxx):
        cov_type, mpp, m0 = self.cov_type, self.mpp, self.m0
        nk, xk, sk = covariances(nk, sx, sxx, cov_type, self.reg_covar)
        if self.dp:
            tail = nk.flip(-1).cumsum(-1).flip(-1)
            wc = (1.0 + nk, self.wcp + torch.cat([tail[:, 1:], torch.zeros_like(tail[:, :1])], -1))
        else:
            wc = self.wcp + nk
        mp = mpp + nk
        means = (mpp * m0[:, None] + nk[..., None] * xk) / mp[..., None]
        dof = self.dofp + nk
        diff = xk - m0[:, None]
        covp = self.covp
        if cov_type == "full":
            cov = covp[:, None] + nk[..., None, None] * sk + (nk * mpp / mp)[..., None, None] * diff[..., :, None] * diff[..., None, :]
            cov = cov / dof[..., None, None]
        elif cov_type == "diag":
            cov = (covp[:, None] + nk[..., None] * (sk + (mpp / mp)[..., None] * diff * diff)) / dof[..., None]
        else:
            cov = (covp[:, None] + nk * (sk + mpp / mp * (diff * diff).mean(-1))) / dof
        return wc, mp, means, dof, cov

    def log_det_prec_chol(self, scale):
        if self.cov_type == "full":
            return -torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
        if self.cov_type == "diag":
            return -torch.log(scale).sum(-1)
        return -self.D * torch.log(scale)

    def e_log_weights(self, wc):
        digamma = torch.digamma
        if self.dp:
            a, b = wc
            ds = digamma(a + b)
            da, db = digamma(a) - ds, digamma(b) - ds
            return da + torch.cat([torch.zeros_like(db[:, :1]), db.cumsum(-1)[:, :-1]], -1)
        return digamma(wc) - digamma(wc.sum(-1, keepdim=True))

    def e_step_logits(self, state):
        """The logits of the E-step: with the scale of the covariances W^-1 / nu, the fused kernel's Gaussian term
        supplies log N(x; m_k, W_k^-1 / nu_k); these add E[log pi_k], -(D/2) log nu_k and (E[log |Lambda_k|] - D /
        beta_k) / 2."""
        wc, mp, _, dof, _ = state
        D = self.D
        log_lambda = D * math.log(2.0) + torch.digamma(0.5 * (dof[..., None] - self.ar)).sum(-1)
        return self.e_log_weights(wc) - 0.5 * D * torch.log(dof) + 0.5 * (log_lambda - D / mp)

    def lower_bound(self, fn, state, r_log_r):
        """scikit-learn's ELBO of a state from the sum of r log r of the E-step that produced it."""
        lgamma, D = torch.lgamma, self.D
        wc, mp, _, dof, cov = state
        scale = scale_from_cov(fn, cov, self.cov_type)
        ldp = self.log_det_prec_chol(scale) - 0.5 * D * torch.log(dof)
        log_wishart = -(dof * ldp + dof * D * 0.5 * math.log(2.0) + lgamma(0.5 * (dof[..., None] - self.ar)).sum(-1)).sum(-1)
        if self.dp:
            a, b = wc
            log_norm_w = -(lgamma(a) + lgamma(b) - lgamma(a + b)).sum(-1)
        else:
            log_norm_w = lgamma(wc.sum(-1)) - lgamma(wc).sum(-1)
        return -r_log_r - log_wishart - log_norm_w - 0.5 * D * torch.log(mp).sum(-1)

    def keep(self, conv, new, old):
        """``new`` for the active mixtures, ``old`` for the converged ones."""
        sel = conv.keep
        wc = (sel(new[0][0], old[0][0]), sel(new[0][1], old[0][1])) if self.dp else sel(new[0], old[0])
        return (wc,) + tuple(sel(a, b) for a, b in zip(new[1:], old[1:]))

    def weights(self, wc):
        """Posterior-mean mixture weights."""
        if self.dp:
            a, b = wc
            w = a / (a + b)
            w = w * torch.cat([torch.ones_like(w[:, :1]), (b / (a + b)).cumprod(-1)[:, :-1]], -1)
            return w / w.sum(-1, keepdim=True)
        return wc / wc.sum(-1, keepdim=True)


def vb_iterations(fn, data, model: VBModel, state, conv, max_iter):
    """VB from ``state`` until every mixture has converged or ``max_iter``: per iteration one pass over ``data``
    (gmmkernels/fit/_data.py) under the state's expected parameters, the M-step and the lower bound."""
    for it in range(1, max_iter + 1):
        scale = scale_from_cov(fn, state[4], model.cov_type)
        st = data.stats(model.e_step_logits(state), state[2], scale, model.cov_type)
        new = model.m_step(st.nk, st.sx, st.sxx)
        lb = model.lower_bound(fn, new, st.rl)
        state = model.keep(conv, new, state)
        if conv.update(it, lb):
            break
    return state


def vb_result(fn, model: VBModel, state, shift, batch, conv) -> FitResult:
    """The FitResult of a VB fit, with the mixture moved back to the original coordinates."""
    wc, mp, means, dof, cov = state
    K, D = model.K, model.D
    w = model.weights(wc)
    scale = scale_from_cov(fn, cov, model.cov_type)
    mix = GaussianMixture(w.log().reshape(*batch, K), (means + shift).reshape(*batch, K, D),
                          scale.reshape(*batch, *scale.shape[1:]), model.cov_type)
    rs = lambda t: t.reshape(*batch, *t.shape[1:])  # noqa: E731
    extras = {
        "weight_concentration": tuple(rs(t) for t in wc) if model.dp else rs(wc),
        "mean_precision": rs(mp),
        "degrees_of_freedom": rs(dof),
        "weights": rs(w),
    }
    return FitResult(mix, conv.lower.reshape(batch), conv.n_iter.reshape(batch), conv.converged.reshape(batch), extras)
