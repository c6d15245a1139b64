"""Reference of ``torch.ops.gmmkernels.gibbs_sweep``: one sweep of the Gibbs sampler of the conjugate diagonal
Bayesian GMM of csrc/include/gmmkernels/gibbs_sweep.h (docs/kernels.md (gibbs_sweep)), written with eager torch
ops and drawn with torch's generator: the same law as the kernel, different random numbers.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


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
