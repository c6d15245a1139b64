"""Fake (meta) kernels and autograd formulas of the native ops, registered from Python."""
from __future__ import annotations

import torch

from . import _backend

if _backend.HAS_C:

    @torch.library.register_fake("gmmkernels::mixture_stats")
    def _mixture_stats_fake(x, means, prec, logc, full, with_score, with_resp):
        torch._check(x.dim() == 3, lambda: "mixture_stats: x must be [B, N, D]")
        torch._check(means.dim() == 3, lambda: "mixture_stats: means must be [B, K, D]")
        B, N, D = x.shape
        K = means.shape[1]
        logp = x.new_empty((B, N))
        score = x.new_empty((B, N, D)) if with_score else x.new_empty((0,))
        resp = x.new_empty((B, N, K)) if with_resp else x.new_empty((0,))
        return logp, score, resp

    @torch.library.register_fake("gmmkernels::mixture_stats_backward")
    def _mixture_stats_backward_fake(grad_logp, grad_score, grad_resp, x, means, prec, logc, logp, full):
        return torch.empty_like(x), torch.empty_like(means), torch.empty_like(prec), torch.empty_like(logc)

    def _setup(ctx, inputs, output):
        x, means, prec, logc, full, with_score, with_resp = inputs
        ctx.save_for_backward(x, means, prec, logc, output[0])
        ctx.full, ctx.with_score, ctx.with_resp = full, with_score, with_resp

    def _backward(ctx, g_logp, g_score, g_resp):
        x, means, prec, logc, logp = ctx.saved_tensors
        if g_logp is None:
            g_logp = torch.zeros_like(logp)
        g_score = g_score if ctx.with_score else None
        g_resp = g_resp if ctx.with_resp else None
        gx, gm, gp, gc = torch.ops.gmmkernels.mixture_stats_backward(
            g_logp.contiguous(),
            None if g_score is None else g_score.contiguous(),
            None if g_resp is None else g_resp.contiguous(),
            x, means, prec, logc, logp, ctx.full,
        )
        return gx, gm, gp, gc, None, None, None

    torch.library.register_autograd("gmmkernels::mixture_stats", _backward, setup_context=_setup)
