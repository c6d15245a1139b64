"""Pure-PyTorch reference of the mixDDPM dispatcher (docs/kernels.md (mixture_dispatch)).

This is the specification and the test oracle of ``gmmkernels::mixture_dispatch`` (C++ CPU, CUDA) and of
its Triton version. It materialises the N x K distance matrix and runs in any dtype (float64 in the tests).

Given points x0 [N, D], centers c [K, D], per-row coefficients a [N], sigma [N] and noise eps [N, D]:

  j[n]     = argmin_k |x0_n - c_k|^2          nearest center ("the dispatcher" D(x0))
  x_t[n]   = a_n x0_n + (1 - a_n) c_j + sigma_n eps_n
  dist2[n] = |x0_n - c_j|^2

With a = sqrt(abar_t) and sigma = sqrt(1 - abar_t) this is the centred forward process of mixDDPM: DDPM on
y = x - c_j, shifted back, so x_T -> N(c_j, I).

Conventions shared by every backend:
  * ties: the lowest index k among the minimisers wins;
  * non-finite distances (NaN, +-inf) never win: they compare as +inf. A row with no finite distance (a NaN
    or inf in x0, or every center non-finite) is assigned center 0, and its x_t / dist2 come out NaN or inf
    as the arithmetic gives. (The kernels' GEMM form can give -inf or NaN where the direct form gives +inf,
    e.g. for an infinite x0; the rule makes both agree.)
  * eps = None means no noise term (x_t = a x0 + (1 - a) c_j).

The kernels rank the centers by the GEMM form |c_k|^2 - 2 x0_n . c_k (the constant |x0_n|^2 dropped), so
in float32 two centers whose distances to x0_n differ by less than about 1e-7 |x0_n| |c_k| can be ranked
differently from this float64 reference (and from each other); exact ties (duplicate centers) are broken
identically everywhere. dist2 is computed directly from x0_n - c_j in every backend (no cancellation).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor


class Dispatch(NamedTuple):
    """Outputs of the dispatcher: noised points [N, D], assignments [N] (int64), squared distances [N]."""

    x_t: Tensor
    assignment: Tensor
    dist2: Tensor


def nearest_center_ref(x0: Tensor, centers: Tensor) -> Tensor:
    """argmin_k |x0_n - c_k|^2 [N] int64, lowest index on ties, non-finite distances treated as +inf."""
    d = ((x0.unsqueeze(1) - centers.unsqueeze(0)) ** 2).sum(-1)  # [N, K]
    d = torch.where(torch.isfinite(d), d, torch.full_like(d, float("inf")))
    if d.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=x0.device)
    return torch.argmin(d, dim=1)  # torch.argmin returns the first minimiser


def mixture_dispatch_ref(x0: Tensor, centers: Tensor, a: Tensor, sigma: Tensor, eps: Optional[Tensor] = None,
                         assignment: Optional[Tensor] = None) -> Dispatch:
    """Dispatch + centred forward noising by direct evaluation. ``a``/``sigma``: [N] or broadcastable to [N].

    ``assignment`` may be given to skip the argmin (e.g. labels as clusters); differentiable in x0, centers, a,
    sigma and eps through autograd (the assignment is piecewise constant)."""
    j = nearest_center_ref(x0.detach(), centers.detach()) if assignment is None else assignment
    cj = centers[j]
    a_ = torch.as_tensor(a, dtype=x0.dtype, device=x0.device).reshape(-1, 1) if torch.is_tensor(a) else a
    s_ = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device).reshape(-1, 1) if torch.is_tensor(sigma) else sigma
    x_t = a_ * x0 + (1 - a_) * cj
    if eps is not None:
        x_t = x_t + s_ * eps
    return Dispatch(x_t, j, ((x0 - cj) ** 2).sum(-1))


def dispatch_vjp(g_xt, g_d2, x0, centers, a, sigma, eps, assign, needs=(True,) * 5):
    """VJP of the dispatcher at a fixed assignment: grads for (x0, centers, a, sigma, eps) (None where not needed
    or not defined). The assignment j is piecewise constant in the inputs, so the op is differentiated with j held
    fixed (the gradient almost everywhere; on a Voronoi boundary it is the gradient of the branch that was taken):

      x_t   = a x0 + (1 - a) c_j + sigma eps          dist2 = |x0 - c_j|^2
      grad_x0      = a G + 2 g (x0 - c_j)
      grad_c[k]    = sum_{n: j_n = k} ( (1 - a_n) G_n - 2 g_n (x0_n - c_k) )      (index_add over rows)
      grad_a[n]    = G_n . (x0_n - c_j)
      grad_sigma[n]= G_n . eps_n
      grad_eps     = sigma G
    with G = grad of x_t [N, D] and g = grad of dist2 [N]. The assignment output has no gradient. It is the backward
    of the native and the Triton dispatcher ops (one index_add: atomic, so not bitwise deterministic on CUDA).
    """
    cj = centers.index_select(0, assign)
    diff = x0 - cj
    a2 = a.unsqueeze(1)
    gx0 = gc = ga = gs = ge = None
    if g_xt is None:
        g_xt = torch.zeros_like(x0)
    if needs[0]:
        gx0 = a2 * g_xt
        if g_d2 is not None:
            gx0 = gx0 + 2.0 * g_d2.unsqueeze(1) * diff
    if needs[1]:
        rows = (1.0 - a2) * g_xt
        if g_d2 is not None:
            rows = rows - 2.0 * g_d2.unsqueeze(1) * diff
        gc = torch.zeros_like(centers).index_add_(0, assign, rows)
    if needs[2]:
        ga = (g_xt * diff).sum(1)
    if needs[3]:
        gs = (g_xt * eps).sum(1) if eps is not None else torch.zeros_like(sigma)
    if needs[4] and eps is not None:
        ge = sigma.unsqueeze(1) * g_xt
    return gx0, gc, ga, gs, ge


def setup_context(ctx, inputs, output):
    """Autograd context of the dispatcher ops (native and Triton): saves the inputs and the assignment."""
    x0, centers, a, sigma, eps = inputs
    ctx.has_eps = eps is not None
    ctx.save_for_backward(x0, centers, a, sigma, eps if eps is not None else x0.new_empty(0), output[1])
    ctx.mark_non_differentiable(output[1])


def backward(ctx, g_xt, g_assign, g_d2):
    """Backward of the dispatcher ops: :func:`gmmkernels.reference.mixture_dispatch.dispatch_vjp` at the saved
    assignment."""
    x0, centers, a, sigma, eps, assign = ctx.saved_tensors
    return dispatch_vjp(g_xt, g_d2, x0, centers, a, sigma, eps if ctx.has_eps else None, assign, ctx.needs_input_grad)
