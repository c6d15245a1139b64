"""Fake kernel and autograd formula of ``gmmkernels::mixture_dispatch`` (the mixDDPM dispatcher).

Gradients. The assignment j is piecewise constant in the inputs, so the op is differentiated with j held
fixed (the gradient almost everywhere; on a Voronoi boundary it is the gradient of the branch that was taken):

  x_t   = a x0 + (1 - a) c_j + sigma eps          dist2 = |x0 - c_j|^2
  grad_x0      = a G + 2 g (x0 - c_j)
  grad_c[k]    = sum_{n: j_n = k} ( (1 - a_n) G_n - 2 g_n (x0_n - c_k) )      (index_add over rows)
  grad_a[n]    = G_n . (x0_n - c_j)
  grad_sigma[n]= G_n . eps_n
  grad_eps     = sigma G
with G = grad of x_t [N, D] and g = grad of dist2 [N]. The assignment output has no gradient. The
backward is a handful of elementwise ops and one index_add (atomic, so not bitwise deterministic on CUDA).
"""
from __future__ import annotations

import torch

from . import _backend


def dispatch_vjp(g_xt, g_d2, x0, centers, a, sigma, eps, assign, needs=(True,) * 5):
    """VJP of the dispatcher at a fixed assignment. Returns grads for (x0, centers, a, sigma, eps) (None where
    not needed or not defined)."""
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


def _fake(x0, centers, a, sigma, eps):
    torch._check(x0.dim() == 2, lambda: "mixture_dispatch: x0 must be [N, D]")
    torch._check(centers.dim() == 2, lambda: "mixture_dispatch: centers must be [K, D]")
    N = x0.shape[0]
    return x0.new_empty(x0.shape), x0.new_empty((N,), dtype=torch.int64), x0.new_empty((N,))


def _setup(ctx, inputs, output):
    x0, centers, a, sigma, eps = inputs
    ctx.has_eps = eps is not None
    ctx.save_for_backward(x0, centers, a, sigma, eps if eps is not None else x0.new_empty(0), output[1])
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, g_xt, g_assign, g_d2):
    x0, centers, a, sigma, eps, assign = ctx.saved_tensors
    needs = ctx.needs_input_grad
    return dispatch_vjp(g_xt, g_d2, x0, centers, a, sigma, eps if ctx.has_eps else None, assign, needs)


if _backend.HAS_C:
    try:
        torch.ops.gmmkernels.mixture_dispatch.default
        _HAS_SCHEMA = True
    except (AttributeError, RuntimeError):  # an extension built before this op existed
        _HAS_SCHEMA = False
    if _HAS_SCHEMA:
        torch.library.register_fake("gmmkernels::mixture_dispatch")(_fake)
        torch.library.register_autograd("gmmkernels::mixture_dispatch", _backward, setup_context=_setup)
