"""Fake (meta) kernels of the fitting and MGDM ops (mixture_suffstats, gibbs_sweep, mgdm_vi_step, mgdm_bridge).

None of them is differentiable: EM / VB statistics, Gibbs draws and the MGDM update steps are used under no_grad
(the MGDM gradient comes from the caller's VJP)."""
from __future__ import annotations

import torch

from . import _backend


def _has(op: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"gmmkernels::{op}", "")
        return True
    except RuntimeError:
        return False


if _backend.HAS_C and _has("mixture_suffstats"):

    @torch.library.register_fake("gmmkernels::mixture_suffstats")
    def _mixture_suffstats_fake(x, resp, full):
        torch._check(x.dim() == 3 and resp.dim() == 3, lambda: "mixture_suffstats: x [B,N,D] and resp [B,N,K] expected")
        B, _, K = resp.shape
        D = x.shape[2]
        sxx = x.new_empty((B, K, D, D)) if full else x.new_empty((B, K, D))
        return x.new_empty((B, K)), x.new_empty((B, K, D)), sxx

    @torch.library.register_fake("gmmkernels::gibbs_sweep")
    def _gibbs_sweep_fake(x, logw, means, var, m0, alpha, kappa0, a0, b0, seed, step):
        B = logw.shape[0]
        return x.new_empty((B, x.shape[1]), dtype=torch.int32), torch.empty_like(logw), torch.empty_like(means), torch.empty_like(var)

    @torch.library.register_fake("gmmkernels::mgdm_vi_step")
    def _mgdm_vi_step_fake(state, grad_v, eps, m, inv_sigma2, lr, beta1, beta2, adam_eps, step, seed, draw):
        return torch.empty_like(grad_v), torch.empty_like(grad_v)

    @torch.library.register_fake("gmmkernels::mgdm_bridge")
    def _mgdm_bridge_fake(u, w, cu, cw, std, seed, draw):
        return torch.empty_like(u)
