"""Pure-PyTorch reference of ``mixture_em_stats``: one EM / VB iteration's E-step and sufficient statistics, by
direct (materialising) evaluation. The specification and test oracle of ``torch.ops.gmmkernels.mixture_em_stats``
and of the public :func:`gmmkernels.mixture_em_stats` (docs/kernels.md (mixture_em_stats)).

  mixture_em_stats_ref         public arguments (logits, means, scale, cov_type), leading dimensions broadcast
  mixture_em_stats_kernel_ref  kernel arguments (means, prec = W, logc, full) of the native op
  mixture_em_mstep_ref         the M-step from the statistics, and the kernel arguments of the next pass
                               (``torch.ops.gmmkernels.mixture_em_mstep``)
  em_moments / em_covariances  the means and covariances of the M-step (scikit-learn's
                               ``_estimate_gaussian_parameters``), without / with the regularisation
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .mixture_stats import _component_terms
from .mixture_suffstats import mixture_suffstats_ref


class EMStats(NamedTuple):
    """What one pass of EM / VB needs from the data, per mixture. The public op returns it too, with ``None`` in
    ``responsibilities`` unless they were asked for."""

    sum_log_prob: Tensor  # [...]           sum_n log p(x_n)
    sum_r_log_r: Tensor  # [...]            sum_n sum_k r_nk log r_nk (minus the responsibility entropy)
    nk: Tensor  # [..., K]                  sum_n r_nk
    sx: Tensor  # [..., K, D]               sum_n r_nk x_n
    sxx: Tensor  # [..., K, D] / [..., K, D, D]   sum_n r_nk x_n^2 (diag, spherical) / sum_n r_nk x_n x_n^T (full)
    responsibilities: Optional[Tensor]  # [..., N, K]


def _from_logits(x: Tensor, logit: Tensor, full: bool):
    """The statistics from the per-(n, k) logits [B, N, K] of x [B or 1, N, D]."""
    logp = torch.logsumexp(logit, -1)
    log_r = logit - logp.unsqueeze(-1)
    r = log_r.exp()
    r_log_r = torch.where(r == 0, torch.zeros_like(r), r * log_r)  # 0 at r = 0 (log r = -inf), NaN at r = NaN
    nk, sx, sxx = mixture_suffstats_ref(x, r, full)
    return logp.sum(-1), r_log_r.sum((-1, -2)), nk, sx, sxx, r


def mixture_em_stats_ref(x: Tensor, logits: Tensor, means: Tensor, scale: Tensor, cov_type: str = "diag") -> EMStats:
    """EM / VB statistics of x [..., N, D] under a mixture (arguments of :func:`gmmkernels.mixture_stats`)."""
    logit, _ = _component_terms(x, logits, means, scale, cov_type)  # [..., N, K]
    batch, (N, K), D = logit.shape[:-2], logit.shape[-2:], x.shape[-1]
    x3 = x.expand(*batch, N, D).reshape(-1, N, D)
    out = _from_logits(x3, logit.reshape(-1, N, K), cov_type == "full")
    tails = [(), (), (K,), (K, D), (K, D, D) if cov_type == "full" else (K, D), (N, K)]
    return EMStats(*(t.reshape((*batch, *tail)) for t, tail in zip(out, tails)))


def mixture_em_stats_kernel_ref(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, full: bool):
    """Reference of ``torch.ops.gmmkernels.mixture_em_stats`` (without its ``with_resp`` switch: resp is returned).

    x [B or 1, N, D], means [B, K, D], logc [B, K]; prec = W: diag [B, K, D], full [B, K, D, D] (lower triangle).
    logit[n, k] = logc[k] - |W_k (x_n - mu_k)|^2 / 2. Returns (sum_n log p [B], sum_nk r log r [B], nk [B, K],
    sx [B, K, D], sxx [B, K, D] or [B, K, D, D], resp [B, N, K]).
    """
    delta = x.unsqueeze(-2) - means.unsqueeze(-3)  # [B, N, K, D]
    if full:
        y = (torch.tril(prec).unsqueeze(1) @ delta.unsqueeze(-1)).squeeze(-1)
    else:
        y = prec.unsqueeze(1) * delta
    logit = logc.unsqueeze(1) - 0.5 * (y * y).sum(-1)
    return _from_logits(x, logit, full)


class EMParams(NamedTuple):
    """The M-step of :func:`gmmkernels.mixture_em_mstep`: the next mixture and the kernel arguments of its pass."""

    logits: Tensor  # [B, K]     log of the weights n_k / sum_j n_j
    means: Tensor  # [B, K, D]
    scale: Tensor  # [B, K, D] (diag), [B, K] (spherical), [B, K, D, D] (full: lower Cholesky factor)
    prec: Tensor  # [B, K, D] (diag, spherical: 1 / scale), [B, K, D, D] (full: the lower-triangular scale^-1)
    logc: Tensor  # [B, K]     logits - sum log diag(scale) - D log(2 pi) / 2
    ok: Tensor  # [B, K] bool: False where the covariance is not positive (definite), the other entries unspecified


def em_moments(nk: Tensor, sx: Tensor, sxx: Tensor, cov_type: str):
    """(n_k = N_k + 10 eps, means, covariances before regularisation) from the statistics. The one-pass
    E[x^2] - E[x]^2 can go slightly negative by rounding: in float32 the diag variances are clamped at 0 (the full
    matrices are projected by :func:`em_covariances` when they need it). Full: symmetrised; spherical: per
    coordinate (the mean over D is taken after the regularisation)."""
    nk = nk + 10 * torch.finfo(nk.dtype).eps
    mu = sx / nk[..., None]
    if cov_type == "full":
        cov = sxx / nk[..., None, None] - mu[..., :, None] * mu[..., None, :]
        return nk, mu, 0.5 * (cov + cov.transpose(-1, -2))
    cov = sxx / nk[..., None] - mu * mu
    return nk, mu, (cov.clamp_min(0) if nk.dtype != torch.float64 else cov)


def em_covariances(nk: Tensor, sx: Tensor, sxx: Tensor, cov_type: str, reg_covar: float):
    """(n_k, means, covariances + reg_covar) of the host M-step. In float32, full covariances are projected onto the
    positive semi-definite cone (an eigenvalue clamp) when some component has no Cholesky factor; elsewhere the
    projection would change nothing but rounding, so the eigendecompositions run only then. Float64 follows
    scikit-learn exactly."""
    nk, mu, cov = em_moments(nk, sx, sxx, cov_type)
    if cov_type == "full":
        if nk.dtype != torch.float64 and bool((torch.linalg.cholesky_ex(cov).info != 0).any()):
            lam, Q = torch.linalg.eigh(cov)
            cov = (Q * lam.clamp_min(0).unsqueeze(-2)) @ Q.transpose(-1, -2)
        return nk, mu, cov + reg_covar * torch.eye(mu.shape[-1], dtype=mu.dtype, device=mu.device)
    cov = cov + reg_covar
    return nk, mu, (cov.mean(-1) if cov_type == "spherical" else cov)


def mixture_em_mstep_ref(nk: Tensor, sx: Tensor, sxx: Tensor, cov_type: str, reg_covar: float) -> EMParams:
    """Reference of ``torch.ops.gmmkernels.mixture_em_mstep``: nk [B, K], sx [B, K, D], sxx [B, K, D] or
    [B, K, D, D] (full) -> :class:`EMParams`. A component is not ok when its covariance (+ reg_covar) is not positive
    (definite), or, in float32 with full covariances, when it has no Cholesky factor before the regularisation (the
    fitting loop then takes the host path of :func:`em_covariances`, which projects it)."""
    n, mu, cov0 = em_moments(nk, sx, sxx, cov_type)
    D = mu.shape[-1]
    logits = (n / n.sum(-1, keepdim=True)).log()  # normalised log-weights: log_softmax would change only rounding
    if cov_type == "full":
        eye = torch.eye(D, dtype=mu.dtype, device=mu.device)
        L, info = torch.linalg.cholesky_ex(cov0 + reg_covar * eye)
        ok = info == 0
        if n.dtype != torch.float64:
            ok = ok & (torch.linalg.cholesky_ex(cov0).info == 0)
        prec = torch.linalg.solve_triangular(L, eye.expand_as(L), upper=False)
        scale, logdet = L, torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    else:
        cov = cov0 + reg_covar
        if cov_type == "spherical":
            cov = cov.mean(-1)
            scale = cov.sqrt()
            ok, prec, logdet = cov > 0, scale.reciprocal().unsqueeze(-1).expand(*scale.shape, D), D * scale.log()
        else:
            scale = cov.sqrt()
            ok, prec, logdet = (cov > 0).all(-1), scale.reciprocal(), scale.log().sum(-1)
    logc = logits - logdet - 0.5 * D * math.log(2 * math.pi)
    return EMParams(logits, mu, scale, prec.contiguous(), logc, ok)
