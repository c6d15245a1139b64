"""Public op: the M-step sufficient statistics of (batched) Gaussian mixtures, one fused reduction.

    mixture_suffstats(x, resp, full=False, *, backend="auto") -> (N_k, sum_n r x, sum_n r x^2 | sum_n r x x^T)

x [..., N, D] (its leading dimensions broadcast against those of resp), resp [..., N, K]. Returns N_k [..., K],
S1 [..., K, D] and S2 [..., K, D] (diag: sum_n r_nk x_n^2) or [..., K, D, D] (full: sum_n r_nk x_n x_n^T).
The native kernels sum in a fixed order (no atomics), so the result is reproducible run to run. EM and VB
(gmmkernels/fit/) build their M-steps on it; docs/kernels.md (mixture_suffstats) has the equations.

backend: "auto" | "reference" | "cpu" | "cuda" (gmmkernels/_dispatch.py gives the rule of "auto").
Dtypes: float32 and float64; float16 / bfloat16 are computed in float32 (and the outputs stay float32); mixed x /
resp dtypes are promoted.
Differentiable with respect to x and resp, to any order, on every backend: the native op's gradients are the
vector-Jacobian product of the reference (:func:`gmmkernels.reference.mixture_suffstats_ref`, torch ops), which
materialises what the reference does (N x K x D, and [B, N, K, D, D] for ``full``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _autograd, _backend, _dispatch
from .. import _validate as V
from ..reference import mixture_suffstats as _ref


def mixture_suffstats(x: Tensor, resp: Tensor, full: bool = False, *, backend: str = "auto"):
    """(N_k [..., K], sum_n r x [..., K, D], sum_n r x^2 [..., K, D] or sum_n r x x^T [..., K, D, D]).

    x [..., N, D] (leading dims broadcast against resp's), resp [..., N, K]. Native kernels sum in a fixed order."""
    fn = "mixture_suffstats"
    V.tensors(fn, [("x", x), ("resp", resp)], same_dtype=False)
    full = V.flag(fn, "full", full)
    if x.dim() < 2 or resp.dim() < 2:
        raise ValueError(f"{fn}: 'x' must be [..., N, D] and 'resp' [..., N, K], got {tuple(x.shape)} and {tuple(resp.shape)}")
    if x.shape[-2] != resp.shape[-2]:
        raise ValueError(f"{fn}: 'x' has N={x.shape[-2]} points but 'resp' has {resp.shape[-2]}")
    try:
        batch = torch.broadcast_shapes(x.shape[:-2], resp.shape[:-2])
    except RuntimeError as e:
        raise ValueError(f"{fn}: the leading (batch) dimensions of 'x' and 'resp' do not broadcast: {e}") from None
    N, D, K = x.shape[-2], x.shape[-1], resp.shape[-1]
    B = math.prod(batch)
    dt = _dispatch.compute_dtype(torch.promote_types(x.dtype, resp.dtype))
    b = _dispatch.select(fn, "mixture_suffstats", backend, x.device, dt, transforms=_autograd.transforms_active())
    x, resp = x.to(dt), resp.to(dt)
    r3 = resp.expand(*batch, N, K).reshape(B, N, K)
    x3 = x.reshape(1, N, D) if math.prod(x.shape[:-2]) == 1 else x.expand(*batch, N, D).reshape(B, N, D)
    if b == "reference":
        nk, sx, sxx = _ref.mixture_suffstats_ref(x3, r3, full)
    else:
        nk, sx, sxx = torch.ops.gmmkernels.mixture_suffstats(x3.contiguous(), r3.contiguous(), full)
    tail = (D, D) if full else (D,)
    return nk.reshape(*batch, K), sx.reshape(*batch, K, D), sxx.reshape(*batch, K, *tail)


# ----------------------------------------------------------------------------------------------------------
# fake kernel and autograd of the native op


if _backend.has_schema("mixture_suffstats"):

    @torch.library.register_fake("gmmkernels::mixture_suffstats")
    def _mixture_suffstats_fake(x, resp, full):
        torch._check(x.dim() == 3 and resp.dim() == 3, lambda: "mixture_suffstats: x [B,N,D] and resp [B,N,K] expected")
        B, _, K = resp.shape
        D = x.shape[2]
        sxx = x.new_empty((B, K, D, D)) if full else x.new_empty((B, K, D))
        return x.new_empty((B, K)), x.new_empty((B, K, D)), sxx

    def _setup(ctx, inputs, output):
        x, resp, full = inputs
        ctx.full = full
        ctx.save_for_backward(x, resp)

    def _backward(ctx, g_nk, g_sx, g_sxx):
        full = ctx.full
        gx, gr = _autograd.vjp(lambda x, r: _ref.mixture_suffstats_ref(x, r, full), ctx.saved_tensors, (g_nk, g_sx, g_sxx))
        return gx, gr, None

    torch.library.register_autograd("gmmkernels::mixture_suffstats", _backward, setup_context=_setup)
