"""Fake (meta) kernels of the GMS ops, for torch.compile / FakeTensor tracing, and an autograd formula that refuses.

The GMS ops are sampling-time ops: they have no derivative. Calling backward through them raises a clear error.
"""
from __future__ import annotations

import torch

from . import _backend


def _no_grad_backward(name):
    def _backward(ctx, *grads):
        raise RuntimeError(f"gmmkernels.{name} has no derivative: it is a sampling-time op (detach its inputs)")

    return _backward


def _setup(ctx, inputs, output):
    pass


if _backend.HAS_C:

    @torch.library.register_fake("gmmkernels::gms_fit")
    def _gms_fit_fake(mean, var, m3, weight, method, iters, lr, var_floor, n_el):
        torch._check(var.shape == mean.shape, lambda: "gms_fit: var must have the shape of mean")
        torch._check(m3.shape == mean.shape, lambda: "gms_fit: m3 must have the shape of mean")
        torch._check(mean.dtype in (torch.float32, torch.float64), lambda: "gms_fit: float32 or float64 expected")
        return torch.empty_like(mean, memory_format=torch.contiguous_format), torch.empty_like(
            mean, memory_format=torch.contiguous_format), torch.empty_like(mean, memory_format=torch.contiguous_format)

    @torch.library.register_fake("gmmkernels::gms_step")
    def _gms_step_fake(x_t, e1, e2, e3, a_t, sigma_t, A, B, lam2, weight, method, iters, lr, var_floor, n_el, per_image,
                       var_clip, seed, offset, with_params):
        for t in (e1, e2, e3):
            torch._check(t.shape == x_t.shape, lambda: "gms_step: e1, e2, e3 must have the shape of x_t")
        out = torch.empty_like(x_t, memory_format=torch.contiguous_format)
        if with_params:
            params = [torch.empty_like(x_t, memory_format=torch.contiguous_format) for _ in range(3)]
        else:
            params = [x_t.new_empty((0,)) for _ in range(3)]
        return out, *params

    torch.library.register_autograd("gmmkernels::gms_fit", _no_grad_backward("gms_fit"), setup_context=_setup)
    torch.library.register_autograd("gmmkernels::gms_step", _no_grad_backward("gms_step"), setup_context=_setup)
