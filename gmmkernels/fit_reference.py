"""Pure-PyTorch references for mixture fitting: the specification and test oracle of the fused fitting ops,
and the eager baselines of the benchmarks.

  mixture_suffstats_ref  M-step sufficient statistics (what ``torch.ops.gmmkernels.mixture_suffstats`` computes)
  em_step_ref            one materialising EM iteration (E-step over N x K x D, then M-step), scikit-learn's arithmetic
  gibbs_sweep_ref        one Gibbs sweep of the conjugate diagonal Bayesian GMM of ``csrc/include/gmmkernels/gibbs_sweep.h``,
                         drawn with torch's generator (same law as the kernel, different random numbers)
  mgdm_vi_step_ref       the fused Gauss_VI step of MGDM (algorithms.md section 3.2) written with torch ops
  mgdm_bridge_ref        cu * u + cw * w + std * z
Shapes: x [B, N, D] (or [1, N, D] shared by all B mixtures), resp [B, N, K].
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import reference as _ref


def mixture_suffstats_ref(x: Tensor, resp: Tensor, full: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """(nk [B,K], sum_n r x [B,K,D], sum_n r x^2 [B,K,D] or sum_n r x x^T [B,K,D,D])."""
    nk = resp.sum(-2)
    sx = resp.transpose(-1, -2) @ x
    if full:
        sxx = torch.einsum("bnk,bni,bnj->bkij", resp, x.expand(resp.shape[0], *x.shape[1:]), x.expand(resp.shape[0], *x.shape[1:]))
    else:
        sxx = resp.transpose(-1, -2) @ (x * x)
    return nk, sx, sxx


def em_step_ref(x: Tensor, weights: Tensor, means: Tensor, cov: Tensor, cov_type: str, reg_covar: float = 1e-6):
    """One EM iteration with scikit-learn's arithmetic (sklearn/mixture/_gaussian_mixture.py), materialising N x K x D.

    x [B,N,D]; weights [B,K]; means [B,K,D]; cov: diag [B,K,D] variances, spherical [B,K], full [B,K,D,D].
    Returns (weights, means, cov, mean log-likelihood under the *input* parameters [B]).
    """
    if cov_type == "full":
        scale = torch.linalg.cholesky(cov)
    else:
        scale = cov.sqrt()
    lp, _, resp = _ref.mixture_stats_ref(x, weights.log(), means, scale, cov_type)
    eps = 10 * torch.finfo(x.dtype).eps
    nk = resp.sum(-2) + eps
    mu = (resp.transpose(-1, -2) @ x) / nk[..., None]
    if cov_type == "full":
        diff = x.unsqueeze(-3) - mu.unsqueeze(-2)  # [B,K,N,D]
        c = torch.einsum("bnk,bkni,bknj->bkij", resp, diff, diff) / nk[..., None, None]
        c = c + reg_covar * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    else:
        c = (resp.transpose(-1, -2) @ (x * x)) / nk[..., None] - mu * mu + reg_covar
        if cov_type == "spherical":
            c = c.mean(-1)
    w = nk / nk.sum(-1, keepdim=True)
    return w, mu, c, lp.mean(-1)


def kmeans_plusplus_ref(x: Tensor, K: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Indices [B, K] of k-means++ seeds (greedy, 2 + log K candidates per step, as in Arthur & Vassilvitskii 2007 and
    scikit-learn's ``kmeans_plusplus``), for each of the B data sets in x [B, N, D]."""
    B, N, _ = x.shape
    trials = 2 + int(math.log(K))
    ar = torch.arange(B, device=x.device)
    idx = torch.empty(B, K, dtype=torch.long, device=x.device)
    idx[:, 0] = torch.randint(N, (B,), generator=generator, device=x.device)
    d2 = ((x - x[ar, idx[:, 0]].unsqueeze(1)) ** 2).sum(-1)  # [B, N]
    for c in range(1, K):
        p = d2.clamp_min(0) + 1e-300
        cand = torch.multinomial(p / p.sum(-1, keepdim=True), trials, replacement=True, generator=generator)  # [B, T]
        dc = torch.cdist(x[ar[:, None], cand], x).pow(2)  # [B, T, N]
        newd = torch.minimum(dc, d2.unsqueeze(1))
        best = newd.sum(-1).argmin(-1)
        idx[:, c] = cand[ar, best]
        d2 = newd[ar, best]
    return idx


def gibbs_sweep_ref(x: Tensor, logw: Tensor, means: Tensor, var: Tensor, m0: Tensor, alpha: float, kappa0: float, a0: float,
                    b0: float, generator: Optional[torch.Generator] = None):
    """One sweep (z | params, then params | z, x) of B chains; eager torch ops. Returns (z [B,N], logw, means, var)."""
    B, K = logw.shape
    N, D = x.shape[-2:]
    xb = x.expand(B, N, D)
    logit = logw.unsqueeze(1) - 0.5 * (var.log().sum(-1)).unsqueeze(1) - 0.5 * (
        ((xb.unsqueeze(2) - means.unsqueeze(1)) ** 2) / var.unsqueeze(1)).sum(-1)  # [B,N,K]
    p = torch.softmax(logit, -1)
    u = torch.rand(B, N, 1, generator=generator, dtype=x.dtype, device=x.device)
    z = (p.cumsum(-1) <= u).sum(-1).clamp_max(K - 1)
    oh = torch.nn.functional.one_hot(z, K).to(x.dtype)
    nk = oh.sum(1)
    s1 = oh.transpose(1, 2) @ xb
    s2 = oh.transpose(1, 2) @ (xb * xb)
    g = torch._standard_gamma((alpha + nk).clamp_min(1e-30)) if generator is None else _gamma(alpha + nk, generator)
    new_logw = g.log() - g.sum(-1, keepdim=True).log()
    kn = kappa0 + nk[..., None]
    mn = (kappa0 * m0 + s1) / kn
    an = a0 + 0.5 * nk[..., None]
    safe = nk[..., None].clamp_min(1)
    xbar = s1 / safe
    ss = (s2 - nk[..., None] * xbar * xbar).clamp_min(0)
    bn = b0 + 0.5 * ss + 0.5 * kappa0 * nk[..., None] * (xbar - m0) ** 2 / kn
    gv = torch._standard_gamma(an.expand(B, K, D).contiguous()) if generator is None else _gamma(an.expand(B, K, D), generator)
    new_var = bn / gv
    new_mu = mn + (new_var / kn).sqrt() * torch.randn(B, K, D, generator=generator, dtype=x.dtype, device=x.device)
    return z, new_logw, new_mu, new_var


def _gamma(shape: Tensor, generator: torch.Generator) -> Tensor:
    """Gamma(shape, 1) with an explicit generator (Marsaglia-Tsang, vectorised rejection)."""
    shape = shape.contiguous()
    small = shape < 1
    a = torch.where(small, shape + 1, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        z = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (u.log() < 0.5 * z * z + d - d * v + d * v.clamp_min(1e-300).log()) & todo
        out = torch.where(ok, d * v, out)
        todo = todo & ~ok
    boost = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device).pow(1.0 / shape)
    return torch.where(small, out * boost, out)


def mgdm_vi_step_ref(state: Tensor, grad_v: Tensor, eps: Tensor, m: Tensor, inv_sigma2: Tensor, lr: float, beta1: float,
                     beta2: float, adam_eps: float, step: int, eps_next: Tensor):
    """Functional version of the fused VI step: returns (new_state [6,B,P], v_next, eps_next). ``eps_next`` is given."""
    mu, rho, mm, mr, vm, vr = state.unbind(0)
    er = rho.exp()
    v = mu + er * eps
    g = grad_v + (v - m) * inv_sigma2[:, None]
    g_mu, g_rho = g, g * er * eps - 1
    mm = beta1 * mm + (1 - beta1) * g_mu
    mr = beta1 * mr + (1 - beta1) * g_rho
    vm = beta2 * vm + (1 - beta2) * g_mu * g_mu
    vr = beta2 * vr + (1 - beta2) * g_rho * g_rho
    bc1, bc2 = 1 - beta1**step, math.sqrt(1 - beta2**step)
    mu = mu - lr / bc1 * mm / (vm.sqrt() / bc2 + adam_eps)
    rho = rho - lr / bc1 * mr / (vr.sqrt() / bc2 + adam_eps)
    return torch.stack([mu, rho, mm, mr, vm, vr]), mu + rho.exp() * eps_next, eps_next


def mgdm_bridge_ref(u: Tensor, w: Tensor, cu: float, cw: float, std: float, z: Tensor) -> Tensor:
    return cu * u + cw * w + std * z
