"""Fake (meta) kernels and the autograd formula of the native SMD adapter op ``gmmkernels::lowrank_adapter``."""
from __future__ import annotations

import torch

from . import _backend

if _backend.HAS_C and hasattr(torch.ops.gmmkernels, "lowrank_adapter"):

    @torch.library.register_fake("gmmkernels::lowrank_adapter")
    def _lowrank_adapter_fake(r, u, s):
        torch._check(r.dim() == 2, lambda: "lowrank_adapter: r must be [P, d]")
        torch._check(u.dim() == 3, lambda: "lowrank_adapter: u must be [P, L, d]")
        torch._check(s.dim() == 1, lambda: "lowrank_adapter: s must be [L]")
        return r.new_empty(r.shape)

    @torch.library.register_fake("gmmkernels::lowrank_adapter_backward")
    def _lowrank_adapter_backward_fake(grad_out, r, u, s):
        return r.new_empty(r.shape), u.new_empty(u.shape), s.new_empty(s.shape)

    def _setup(ctx, inputs, output):
        r, u, s = inputs
        ctx.save_for_backward(r, u, s)

    def _backward(ctx, grad_out):
        r, u, s = ctx.saved_tensors
        gr, gu, gs = torch.ops.gmmkernels.lowrank_adapter_backward(grad_out.contiguous(), r, u, s)
        return gr, gu, gs

    torch.library.register_autograd("gmmkernels::lowrank_adapter", _backward, setup_context=_setup)
