"""References of the fused MGDM steps (docs/kernels.md (mgdm_step)): the Gauss_VI step (gradient of the
variational objective, one Adam step on (mu, rho), next reparameterised sample) and the bridge draw, with torch ops.
With the normals of :func:`stream_normals` (tags 4 and 5) they draw what the native kernels draw.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .rng import philox_normal_ref, seed64

TAG_BRIDGE, TAG_VI = 4, 5


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
    """The bridge draw cu * u + cw * w + std * z with the normals z given."""
    return cu * u + cw * w + std * z


def stream_normals(like: Tensor, seed: int, draw: int, tag: int) -> Tensor:
    """The normals the native kernels draw for the elements of ``like`` (flat index), as a tensor like it."""
    idx = torch.arange(like.numel(), dtype=torch.int64)
    return philox_normal_ref(idx, seed64(seed), draw, tag).reshape(like.shape).to(device=like.device, dtype=like.dtype)
