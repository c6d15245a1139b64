"""Pure-PyTorch references: the specification and the test oracle of every fused op.

They materialise the N x K x D intermediate, run in any dtype (float64 for tests), and are
differentiable through autograd. Nothing here is fast; everything here is obviously right.

Conventions (same as the public ops in :mod:`gmmkernels.ops.mixture_stats`; equations in docs/kernels.md
(mixture_stats)):
  x       [..., N, D]   points
  logits  [..., K]      unnormalised log-weights (normalised with log_softmax)
  means   [..., K, D]
  scale   "diag":      per-dimension standard deviations  [..., K, D]
          "spherical": one standard deviation per component [..., K]
          "full":      lower-triangular Cholesky factor L of the covariance (Sigma = L L^T) [..., K, D, D]
The leading batch dimensions broadcast: each index of them is one independent mixture.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


class MixtureStats(NamedTuple):
    """log p(x) [..., N], score grad_x log p(x) [..., N, D], responsibilities [..., N, K]. The public ops return it
    too, with ``None`` in the fields that were not asked for."""

    log_prob: Tensor
    score: Optional[Tensor]
    responsibilities: Optional[Tensor]


def _component_terms(x: Tensor, logits: Tensor, means: Tensor, scale: Tensor, cov_type: str):
    """Per-(n, k) log-joint logits [..., N, K] and per-component scores [..., N, K, D]."""
    D = x.shape[-1]
    delta = x.unsqueeze(-2) - means.unsqueeze(-3)  # [..., N, K, D]
    logw = torch.log_softmax(logits, dim=-1)
    if cov_type == "spherical":
        scale = scale.unsqueeze(-1).expand(*scale.shape, D)
        cov_type = "diag"
    if cov_type == "diag":
        s = scale.unsqueeze(-3)  # [..., 1, K, D]
        z = delta / s
        maha = (z * z).sum(-1)
        logdet = torch.log(scale).sum(-1)  # [..., K]
        comp_score = -delta / (s * s)
    elif cov_type == "full":
        L = scale.unsqueeze(-4)  # [..., 1, K, D, D]
        z = torch.linalg.solve_triangular(L, delta.unsqueeze(-1), upper=False)  # [..., N, K, D, 1]
        maha = (z * z).sum((-1, -2))
        logdet = torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
        comp_score = -torch.linalg.solve_triangular(L.transpose(-1, -2), z, upper=True).squeeze(-1)
    else:
        raise ValueError(f"unknown cov_type {cov_type!r}")
    logit = (logw - logdet).unsqueeze(-2) - 0.5 * maha - 0.5 * D * LOG_2PI
    return logit, comp_score


def mixture_stats_ref(x: Tensor, logits: Tensor, means: Tensor, scale: Tensor, cov_type: str = "diag") -> MixtureStats:
    """log p, score and responsibilities of a Gaussian mixture, by direct (materialising) evaluation."""
    logit, comp_score = _component_terms(x, logits, means, scale, cov_type)
    logp = torch.logsumexp(logit, dim=-1)
    resp = torch.softmax(logit, dim=-1)
    score = (resp.unsqueeze(-1) * comp_score).sum(-2)
    return MixtureStats(logp, score, resp)


def mixture_log_prob_ref(x, logits, means, scale, cov_type="diag") -> Tensor:
    return mixture_stats_ref(x, logits, means, scale, cov_type).log_prob


def mixture_stats_kernel_ref(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, full: bool):
    """Reference of the kernel-level op ``torch.ops.gmmkernels.mixture_stats``.

    x [B, N, D], means [B, K, D], logc [B, K];
    prec = W: diag -> [B, K, D] (W = diag(prec)); full -> [B, K, D, D], lower triangle used (upper ignored).
    logit[n, k] = logc[k] - 1/2 |W_k (x_n - mu_k)|^2,  logp = LSE_k logit,  r = softmax_k logit,
    score = sum_k r_k * (-W_k^T W_k (x_n - mu_k)).
    Returns (logp [B, N], score [B, N, D], resp [B, N, K]).
    """
    delta = x.unsqueeze(-2) - means.unsqueeze(-3)  # [B, N, K, D]
    if full:
        W = torch.tril(prec).unsqueeze(1)  # [B, 1, K, D, D]
        y = (W @ delta.unsqueeze(-1)).squeeze(-1)  # [B, N, K, D]
        comp_score = -(W.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1)
    else:
        w = prec.unsqueeze(1)
        y = w * delta
        comp_score = -w * y
    logit = logc.unsqueeze(1) - 0.5 * (y * y).sum(-1)
    logp = torch.logsumexp(logit, -1)
    resp = torch.softmax(logit, -1)
    score = (resp.unsqueeze(-1) * comp_score).sum(-2)
    return logp, score, resp


def mixture_stats_backward_ref(grad_logp: Optional[Tensor], grad_score: Optional[Tensor], grad_resp: Optional[Tensor],
                               x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, full: bool):
    """Reference of the kernel-level VJP: ``torch.ops.gmmkernels.mixture_stats_backward`` and
    ``torch.ops.gmmkernels.mixture_stats_triton_backward`` (which also take the saved logp: the shift of their
    exponent, which does not change the value).

    The gradients (grad_x, grad_means, grad_prec, grad_logc) of L = sum g logp + sum G.score + sum H.resp of
    :func:`mixture_stats_kernel_ref`, written out (docs/kernels.md (mixture_stats), "Backward"):
        a_k  = r_k [ g + G.s_k - G.S + H_k - sum_j r_j H_j ],   gy_k = -a_k y_k - r_k W_k G
        grad_x = sum_k W_k^T gy_k,  grad_mu_k = -sum_n W_k^T gy_k,  grad_W_k = sum_n (gy_k delta^T - r_k y_k G^T),
        grad_logc_k = sum_n a_k
    with r = softmax of the logits. Built from differentiable torch ops, so its own derivatives are the second derivatives of the
    fused op: the op's double backward is the VJP of this function (it materialises [B, N, K, D]; full covariances
    also [B, K, D, D] per product). ``None`` cotangents count as zero; grad_prec of a full W is lower-triangular.
    """
    delta = x.unsqueeze(-2) - means.unsqueeze(-3)  # [B, N, K, D]
    if full:
        W = torch.tril(prec).unsqueeze(1)  # [B, 1, K, D, D]
        y = (W @ delta.unsqueeze(-1)).squeeze(-1)
        s = -(W.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1)
    else:
        w = prec.unsqueeze(1)
        y = w * delta
        s = -w * y
    logit = logc.unsqueeze(1) - 0.5 * (y * y).sum(-1)  # [B, N, K]
    r = torch.softmax(logit, -1)
    coef = torch.zeros_like(logit) if grad_logp is None else grad_logp.unsqueeze(-1).expand_as(logit)
    gy = torch.zeros_like(y)
    if grad_score is not None:
        G = grad_score.unsqueeze(-2)  # [B, N, 1, D]
        gs = (G * s).sum(-1)
        coef = coef + (gs - (r * gs).sum(-1, keepdim=True))  # the difference first: |G.s_k| >> |g| far out
        c = r.unsqueeze(-1) * G  # cotangent of s_k
        gy = gy - ((W @ c.unsqueeze(-1)).squeeze(-1) if full else w * c)
    if grad_resp is not None:
        coef = coef + (grad_resp - (r * grad_resp).sum(-1, keepdim=True))
    a = r * coef
    gy = gy - a.unsqueeze(-1) * y
    if full:
        gdelta = (W.transpose(-1, -2) @ gy.unsqueeze(-1)).squeeze(-1)
        gW = torch.einsum("bnki,bnkj->bkij", gy, delta)
        if grad_score is not None:
            gW = gW - torch.einsum("bnki,bnkj->bkij", y, c)
        gprec = torch.tril(gW)
    else:
        gdelta = w * gy
        gw = gy * delta
        if grad_score is not None:
            gw = gw - y * c
        gprec = gw.sum(1)
    return gdelta.sum(2), -gdelta.sum(1), gprec, a.sum(1)
