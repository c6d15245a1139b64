"""Triton backend of the SMD low-rank adapter (docs/kernels.md (lowrank_adapter)).

Semantics are those of ``smd_reference.lowrank_adapter_ref`` on flattened rows::

    r [P, d], u [P, L, d], s [L];  c_l = softplus(s_l)
    r_l = u_l (u_l . r_{l-1}) + c_l r_{l-1},  l = 1..L;   out = r_L

Layout: one program per block of BLOCK_P rows; the row tile [BLOCK_P, BLOCK_D] (BLOCK_D = next power of two >= d)
stays in registers, every layer loads the u_l tile once, does a row-wise dot and an axpy.

Backward (upstream g_L = grad_out, l = L..1; beta_l = g_l . u_l):
    grad_u_l = alpha_l g_l + beta_l r_{l-1},  g_{l-1} = beta_l u_l + c_l g_l,  gc[p, l] = g_l . r_{l-1}
The kernel keeps no forward state from the forward pass: for layer l it rebuilds r_{l-1} by replaying layers 1..l-1
from r (L (L - 1) / 2 replayed layers in all: 1 for the default L = 2) so no tile has to be written and read back
through memory within a program. gc [P, L] is summed over rows in torch (deterministic) and multiplied by
softplus'(s) for grad_s.

All arithmetic is fp32; inputs are float32 (the public wrapper casts half inputs, float64 is rejected).

Entry points:
  lowrank_adapter_triton(r, u, s) -> out     differentiable; calls ``torch.ops.gmmkernels.lowrank_adapter_triton``
      (a ``torch.library.triton_op``) whose autograd calls ``gmmkernels::lowrank_adapter_triton_backward``.
      CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 was set before import (eager only).
  _lra_fwd / _lra_bwd: plain launchers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op

from .. import _autograd
from ..reference.lowrank_adapter import lowrank_adapter_backward_ref
from ._utils import INTERPRET as _INTERPRET
from ._utils import check_device, launcher

@triton.jit
def _lra_fwd_kernel(r_ptr, u_ptr, c_ptr, out_ptr, P, L, d, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < P
    mask = rmask[:, None] & (cols[None, :] < d)
    rows64 = rows.to(tl.int64)
    x = tl.load(r_ptr + rows64[:, None] * d + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    for l in range(0, L):
        uu = tl.load(u_ptr + (rows64[:, None] * L + l) * d + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        a = tl.sum(uu * x, axis=1)
        cl = tl.load(c_ptr + l).to(tl.float32)
        x = a[:, None] * uu + cl * x
    tl.store(out_ptr + rows64[:, None] * d + cols[None, :], x, mask=mask)


@triton.jit
def _lra_bwd_kernel(g_ptr, r_ptr, u_ptr, c_ptr, gr_ptr, gu_ptr, gc_ptr, P, L, d,
                    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < P
    mask = rmask[:, None] & (cols[None, :] < d)
    rows64 = rows.to(tl.int64)
    x0 = tl.load(r_ptr + rows64[:, None] * d + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + rows64[:, None] * d + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    for i in range(0, L):
        l = L - 1 - i
        # replay layers 0 .. l-1 to get the input h of layer l
        h = x0
        for m in range(0, l):
            um = tl.load(u_ptr + (rows64[:, None] * L + m) * d + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            am = tl.sum(um * h, axis=1)
            cm = tl.load(c_ptr + m).to(tl.float32)
            h = am[:, None] * um + cm * h
        uu = tl.load(u_ptr + (rows64[:, None] * L + l) * d + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        alpha = tl.sum(uu * h, axis=1)
        beta = tl.sum(g * uu, axis=1)
        gh = tl.sum(g * h, axis=1)
        tl.store(gu_ptr + (rows64[:, None] * L + l) * d + cols[None, :], alpha[:, None] * g + beta[:, None] * h,
                 mask=mask)
        tl.store(gc_ptr + rows64 * L + l, gh, mask=rmask)
        cl = tl.load(c_ptr + l).to(tl.float32)
        g = beta[:, None] * uu + cl * g
    tl.store(gr_ptr + rows64[:, None] * d + cols[None, :], g, mask=mask)


def _config(d: int, device: torch.device) -> dict:
    block_d = max(16, triton.next_power_of_2(max(d, 1)))
    if device.type != "cuda" or _INTERPRET:
        return dict(BLOCK_P=16, BLOCK_D=block_d, num_warps=1)
    block_p = max(1, min(64, 4096 // block_d))
    return dict(BLOCK_P=block_p, BLOCK_D=block_d, num_warps=4 if block_d <= 256 else 8)


def _check(fn: str, r: Tensor, u: Tensor, s: Tensor) -> None:
    if r.dim() != 2 or u.dim() != 3 or s.dim() != 1 or u.shape[0] != r.shape[0] or u.shape[2] != r.shape[1] \
            or s.shape[0] != u.shape[1]:
        raise ValueError(f"{fn}: expected r [P, d], u [P, L, d], s [L]; got {tuple(r.shape)}, {tuple(u.shape)}, "
                         f"{tuple(s.shape)}")
    for name, t in (("r", r), ("u", u), ("s", s)):
        if t.dtype != torch.float32:
            raise TypeError(f"{fn}: '{name}' must be float32 (Triton computes in fp32), got {t.dtype}")
        if t.device != r.device:
            raise ValueError(f"{fn}: all tensors must be on one device; '{name}' is on {t.device}, r on {r.device}")
    check_device(fn, r)


def _lra_fwd(r: Tensor, u: Tensor, s: Tensor) -> Tensor:
    _check("lowrank_adapter_triton", r, u, s)
    P, L, d = u.shape
    out = torch.empty((P, d), device=r.device, dtype=torch.float32)
    if P == 0 or d == 0:
        return out
    c = F.softplus(s).contiguous()
    cfg = _config(d, r.device)
    grid = (triton.cdiv(P, cfg["BLOCK_P"]),)
    launcher(_lra_fwd_kernel, r)[grid](r.contiguous(), u.contiguous(), c, out, P, L, d, **cfg)
    return out


def _lra_bwd(grad_out: Tensor, r: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    _check("lowrank_adapter_triton_backward", r, u, s)
    P, L, d = u.shape
    dev = r.device
    grad_r = torch.empty((P, d), device=dev, dtype=torch.float32)
    grad_u = torch.empty((P, L, d), device=dev, dtype=torch.float32)
    gc = torch.zeros((P, L), device=dev, dtype=torch.float32)
    if P > 0 and d > 0:
        c = F.softplus(s).contiguous()
        cfg = _config(d, dev)
        grid = (triton.cdiv(P, cfg["BLOCK_P"]),)
        launcher(_lra_bwd_kernel, r)[grid](grad_out.to(torch.float32).contiguous(), r.contiguous(), u.contiguous(), c,
                                     grad_r, grad_u, gc, P, L, d, **cfg)
    elif P > 0:
        grad_r.copy_(grad_out)
    deriv = torch.where(s > 20, torch.ones_like(s), torch.sigmoid(s))  # softplus' (threshold 20)
    return grad_r, grad_u, gc.sum(0) * deriv


@triton_op("gmmkernels::lowrank_adapter_triton", mutates_args=())
def _lowrank_adapter_triton_op(r: Tensor, u: Tensor, s: Tensor) -> Tensor:
    return _lra_fwd(r, u, s)


@triton_op("gmmkernels::lowrank_adapter_triton_backward", mutates_args=())
def _lowrank_adapter_triton_backward_op(grad_out: Tensor, r: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return _lra_bwd(grad_out, r, u, s)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_out):
    r, u, s = ctx.saved_tensors
    return torch.ops.gmmkernels.lowrank_adapter_triton_backward.default(grad_out, r, u, s)


_lowrank_adapter_triton_op.register_autograd(_backward, setup_context=_setup_context)


def _backward_bwd(ctx, ggr, ggu, ggs):
    """Second and higher derivatives: the VJP of the differentiable reference of this backward."""
    return tuple(_autograd.vjp(lowrank_adapter_backward_ref, ctx.saved_tensors, (ggr, ggu, ggs)))


_lowrank_adapter_triton_backward_op.register_autograd(_backward_bwd, setup_context=_setup_context)


def lowrank_adapter_triton(r: Tensor, u: Tensor, s: Tensor) -> Tensor:
    """Differentiable fused adapter chain: r [P, d], u [P, L, d], s [L] (float32) -> [P, d]."""
    return torch.ops.gmmkernels.lowrank_adapter_triton.default(r, u, s)
