"""Triton backend of the mixDDPM dispatcher (semantics: ``gmmkernels.mixddpm_reference.mixture_dispatch_ref``).

One program per block of BLOCK_N rows. For each tile of BLOCK_K centers it accumulates the cross term
x0 . c^T over D chunks with ``tl.dot`` (fp32 operands, input_precision="ieee"), forms
dist = |c|^2 - 2 x0 . c (NaN and -inf -> +inf, padded centers +inf), takes the tile's (min, argmin) with
``tie_break_left`` and merges it into the running (min, argmin) with a strict '<', so the result is the
lowest minimising index, as in the C++ and CUDA kernels. An epilogue sweeps D once more: it gathers c_j and
writes x_t = a x0 + (1 - a) c_j + sigma eps and dist2 = |x0 - c_j|^2 (direct difference).

float32 compute (float16 / bfloat16 inputs are cast by the public wrapper; float64 is rejected).
Registered as ``torch.ops.gmmkernels.mixture_dispatch_triton`` (a ``torch.library.triton_op``), with the
autograd formula of ``gmmkernels._registrations_mixddpm``. Runs on CUDA tensors, and on CPU tensors under
TRITON_INTERPRET=1 (eager only).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op

from ..reference.mixture_dispatch import backward, setup_context
from ._utils import check_device, launcher

@triton.jit
def _dispatch_kernel(x_ptr, c_ptr, cn_ptr, a_ptr, s_ptr, e_ptr, xt_ptr, j_ptr, d2_ptr, N, K, D,
                     HAS_EPS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    mn = rn < N
    rn64 = rn.to(tl.int64)
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    bidx = tl.zeros([BLOCK_N], tl.int32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        mk = rk < K
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            rd = d0 + tl.arange(0, BLOCK_D)
            md = rd < D
            xv = tl.load(x_ptr + rn64[:, None] * D + rd[None, :], mask=mn[:, None] & md[None, :], other=0.0)
            cv = tl.load(c_ptr + rk.to(tl.int64)[None, :] * D + rd[:, None], mask=mk[None, :] & md[:, None], other=0.0)
            acc += tl.dot(xv, cv, input_precision="ieee")
        cn = tl.load(cn_ptr + rk, mask=mk, other=0.0)
        dist = cn[None, :] - 2.0 * acc
        dist = tl.where(mk[None, :] & (dist == dist) & (dist > float("-inf")), dist, float("inf"))
        tmin = tl.min(dist, axis=1)
        targ = tl.argmin(dist, axis=1, tie_break_left=True).to(tl.int32) + k0
        upd = tmin < best
        best = tl.where(upd, tmin, best)
        bidx = tl.where(upd, targ, bidx)
    a = tl.load(a_ptr + rn, mask=mn, other=0.0)
    s = tl.load(s_ptr + rn, mask=mn, other=0.0)
    d2 = tl.zeros([BLOCK_N], tl.float32)
    b64 = bidx.to(tl.int64)
    for d0 in range(0, D, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        m2 = mn[:, None] & (rd < D)[None, :]
        xv = tl.load(x_ptr + rn64[:, None] * D + rd[None, :], mask=m2, other=0.0)
        cv = tl.load(c_ptr + b64[:, None] * D + rd[None, :], mask=m2, other=0.0)
        diff = xv - cv
        d2 += tl.sum(diff * diff, axis=1)
        out = a[:, None] * xv + (1.0 - a)[:, None] * cv
        if HAS_EPS:
            ev = tl.load(e_ptr + rn64[:, None] * D + rd[None, :], mask=m2, other=0.0)
            out += s[:, None] * ev
        tl.store(xt_ptr + rn64[:, None] * D + rd[None, :], out, mask=m2)
    tl.store(j_ptr + rn, b64, mask=mn)
    tl.store(d2_ptr + rn, d2, mask=mn)


def _config(N: int, K: int, D: int, device: torch.device) -> dict:
    if device.type != "cuda":  # interpreter: small fixed tiles (tl.dot needs >= 16)
        return dict(BLOCK_N=16, BLOCK_K=16, BLOCK_D=16, num_warps=1)
    bk = min(64, max(16, triton.next_power_of_2(K)))
    bd = min(64, max(16, triton.next_power_of_2(D)))
    return dict(BLOCK_N=64, BLOCK_K=bk, BLOCK_D=bd, num_warps=4)


def _check(x0, centers, a, sigma, eps):
    for name, t in (("x0", x0), ("centers", centers), ("a", a), ("sigma", sigma), ("eps", eps)):
        if t is None:
            continue
        if t.dtype != torch.float32:
            raise TypeError(f"mixture_dispatch_triton: argument '{name}' must be float32, got {t.dtype}")
        if t.device != x0.device:
            raise ValueError(f"mixture_dispatch_triton: argument '{name}' is on {t.device} but 'x0' is on {x0.device}")
    if x0.dim() != 2 or centers.dim() != 2 or centers.shape[1] != x0.shape[1] or centers.shape[0] < 1:
        raise ValueError(f"mixture_dispatch_triton: need x0 [N, D] and centers [K>=1, D], got {tuple(x0.shape)} "
                         f"and {tuple(centers.shape)}")
    check_device("mixture_dispatch_triton", x0)


def _dispatch_fwd(x0: Tensor, centers: Tensor, a: Tensor, sigma: Tensor, eps: Optional[Tensor]):
    _check(x0, centers, a, sigma, eps)
    N, D = x0.shape
    K = centers.shape[0]
    xt = torch.empty_like(x0)
    j = torch.empty((N,), dtype=torch.int64, device=x0.device)
    d2 = torch.empty((N,), dtype=x0.dtype, device=x0.device)
    if N == 0:
        return xt, j, d2
    xc, cc = x0.contiguous(), centers.contiguous()
    cn = (cc * cc).sum(1).contiguous()
    ec = eps.contiguous() if eps is not None else xc
    cfg = _config(N, K, D, x0.device)
    grid = (triton.cdiv(N, cfg["BLOCK_N"]),)
    launcher(_dispatch_kernel, x0)[grid](xc, cc, cn, a.contiguous(), sigma.contiguous(), ec, xt, j, d2, N, K, D,
                                  HAS_EPS=eps is not None, **cfg)
    return xt, j, d2


@triton_op("gmmkernels::mixture_dispatch_triton", mutates_args=())
def _mixture_dispatch_triton_op(x0: Tensor, centers: Tensor, a: Tensor, sigma: Tensor,
                                eps: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    return _dispatch_fwd(x0, centers, a, sigma, eps)


_mixture_dispatch_triton_op.register_autograd(backward, setup_context=setup_context)


def mixture_dispatch_triton(x0: Tensor, centers: Tensor, a: Tensor, sigma: Tensor, eps: Optional[Tensor] = None):
    """Differentiable fused dispatcher on float32 [N, D] / [K, D] / [N] / [N] / [N, D] tensors.
    Returns (x_t, assignment int64, dist2)."""
    return torch.ops.gmmkernels.mixture_dispatch_triton.default(x0, centers, a, sigma, eps)
