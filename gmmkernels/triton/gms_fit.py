"""Triton kernel of the GMS per-element fit (elementwise; the math: docs/kernels.md (gms_fit) and
gmmkernels/ops/gms_fit.py::gms_fit).

  gms_fit_triton(mean, var, m3, weight, method, iters, lr, var_floor, n_el) -> (mu1, mu2, v)
      method 0: closed form; method 1: the official Adan solver, iterations in registers, one launch.
      Computes in the input dtype (float32 or float64), on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1.
      The Adan step sizes lr / (1 - b1^k), lr b2 / (1 - b2^k), sqrt(1 - b3^k) are computed on the host in float64
      (as the C++/CUDA kernels do) and read from a small table.
      Registered as ``torch.ops.gmmkernels.gms_fit_triton`` (a ``torch.library.triton_op``, visible to
      torch.compile on CUDA); like the native op it has no derivative (a sampling-time op).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op

from ._utils import INTERPRET as _INTERPRET
from ._utils import check_device, launcher

_BETAS = (0.9, 0.92, 0.92)


@triton.jit
def _cbrt(x):
    """Real cube root: exp(log|x| / 3) with the sign, refined by one Newton step (0 for x = 0)."""
    ax = tl.abs(x)
    safe = tl.where(ax > 0, ax, 1.0)
    y = tl.exp(tl.log(safe) / 3.0)
    y = y - (y * y * y - safe) / (3.0 * y * y)
    y = tl.where(ax > 0, y, 0.0)
    return tl.where(x < 0, -y, y)


@triton.jit
def _gms_fit_kernel(M1P, VP, M3P, O1, O2, OV, SCHED, n, iters,
                    METHOD: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    M1 = tl.load(M1P + offs, mask=mask, other=0.0)
    V = tl.load(VP + offs, mask=mask, other=0.0)
    M3 = tl.load(M3P + offs, mask=mask, other=0.0)
    # Every non-integer constant comes from a table in the compute dtype (float64 kernels must not see float32
    # literals): [w, 1 - w, w(1-w)(1-2w) (1 if 0), 2 / n_el, var_floor, b1, 1 - b1, b2, 1 - b2, eps, 0.1, 1.2, 1e-3,
    # 0.998, then (c1, c2, s3) per iteration].
    w = tl.load(SCHED)
    q = tl.load(SCHED + 1)
    c3 = tl.load(SCHED + 2)
    scale = tl.load(SCHED + 3)
    var_floor = tl.load(SCHED + 4)
    if METHOD == 0:
        inf = float("inf")
        bad = (M3 != M3) | (M1 != M1) | (V != V) | (tl.abs(M1) == inf) | (tl.abs(V) == inf)
        Vc = tl.where(V > 0, V, 0.0)
        pq = w * q
        m3c = M3 - M1 * (3.0 * Vc + M1 * M1)
        if HALF:
            delta = tl.where(m3c > 0, inf, -inf)
        else:
            delta = _cbrt(m3c / c3)
        delta = tl.where(m3c == 0, 0.0, delta)
        v = Vc - pq * delta * delta
        vmin = var_floor * Vc
        fb = ~(v >= vmin)
        v = tl.where(fb, vmin, v)
        mag = tl.sqrt((Vc - vmin) / pq)
        delta = tl.where(fb, tl.where(delta < 0, -mag, mag), delta)
        mu1 = M1 + q * delta
        mu2 = M1 - w * delta
        nan = float("nan")
        mu1 = tl.where(bad, nan, mu1)
        mu2 = tl.where(bad, nan, mu2)
        v = tl.where(bad, nan, v)
    else:
        b1 = tl.load(SCHED + 5)
        ob1 = tl.load(SCHED + 6)
        b2 = tl.load(SCHED + 7)
        ob2 = tl.load(SCHED + 8)
        eps = tl.load(SCHED + 9)
        lo = tl.load(SCHED + 10)
        hi = tl.load(SCHED + 11)
        th0 = M1
        th1 = M1 - tl.load(SCHED + 12)
        th2 = tl.zeros_like(M1) + tl.load(SCHED + 13)
        m0 = tl.zeros_like(M1)
        m1 = tl.zeros_like(M1)
        m2 = tl.zeros_like(M1)
        d0 = tl.zeros_like(M1)
        d1 = tl.zeros_like(M1)
        d2 = tl.zeros_like(M1)
        n0 = tl.zeros_like(M1)
        n1 = tl.zeros_like(M1)
        n2 = tl.zeros_like(M1)
        p0 = tl.zeros_like(M1)
        p1 = tl.zeros_like(M1)
        p2 = tl.zeros_like(M1)
        for k in range(0, iters):
            c1 = tl.load(SCHED + 14 + 3 * k)
            c2 = tl.load(SCHED + 15 + 3 * k)
            s3 = tl.load(SCHED + 16 + 3 * k)
            bc = tl.minimum(tl.maximum(th2, lo), hi)
            inside = tl.where((th2 >= lo) & (th2 <= hi), 1.0, 0.0)
            vv = V * bc
            r0 = w * th0 + q * th1 - M1
            r1 = w * (th0 * th0 + vv) + q * (th1 * th1 + vv) - (M1 * M1 + V)
            r2 = w * (th0 * th0 * th0 + 3.0 * th0 * vv) + q * (th1 * th1 * th1 + 3.0 * th1 * vv) - M3
            a0 = scale * r0
            a1 = scale * r1
            a2 = scale * r2
            g0 = a0 * w + a1 * (2.0 * w * th0) + a2 * (w * (3.0 * th0 * th0 + 3.0 * vv))
            g1 = a0 * q + a1 * (2.0 * q * th1) + a2 * (q * (3.0 * th1 * th1 + 3.0 * vv))
            g2 = (a1 * V + a2 * (3.0 * (w * th0 + q * th1) * V)) * inside
            first = k == 0
            p0 = tl.where(first, -g0, p0)
            p1 = tl.where(first, -g1, p1)
            p2 = tl.where(first, -g2, p2)
            # Adan (see csrc/include/gmmkernels/gms_fit.h::adan_update), three parameters
            p0 = p0 + g0
            p1 = p1 + g1
            p2 = p2 + g2
            m0 = m0 * b1 + ob1 * g0
            m1 = m1 * b1 + ob1 * g1
            m2 = m2 * b1 + ob1 * g2
            d0 = d0 * b2 + ob2 * p0
            d1 = d1 * b2 + ob2 * p1
            d2 = d2 * b2 + ob2 * p2
            p0 = p0 * b2 + g0
            p1 = p1 * b2 + g1
            p2 = p2 * b2 + g2
            n0 = n0 * b2 + ob2 * p0 * p0
            n1 = n1 * b2 + ob2 * p1 * p1
            n2 = n2 * b2 + ob2 * p2 * p2
            den0 = tl.sqrt(n0) / s3 + eps
            den1 = tl.sqrt(n1) / s3 + eps
            den2 = tl.sqrt(n2) / s3 + eps
            th0 = th0 - c1 * (m0 / den0) - c2 * (d0 / den0)
            th1 = th1 - c1 * (m1 / den1) - c2 * (d1 / den1)
            th2 = th2 - c1 * (m2 / den2) - c2 * (d2 / den2)
            p0 = -g0
            p1 = -g1
            p2 = -g2
        mu1 = th0
        mu2 = th1
        v = V * tl.minimum(tl.maximum(th2, lo), hi)
    tl.store(O1 + offs, mu1.to(O1.dtype.element_ty), mask=mask)
    tl.store(O2 + offs, mu2.to(O2.dtype.element_ty), mask=mask)
    tl.store(OV + offs, v.to(OV.dtype.element_ty), mask=mask)


def adan_schedule(iters: int, lr: float) -> list[float]:
    """Flat [c1, c2, s3] * iters of the Adan step sizes, running powers in float64 (as gms_fit.h::AdanSchedule)."""
    b1, b2, b3 = _BETAS
    b1k = b2k = b3k = 1.0
    out = []
    for _ in range(iters):
        b1k *= b1
        b2k *= b2
        b3k *= b3
        out += [lr / (1.0 - b1k), lr * b2 / (1.0 - b2k), math.sqrt(1.0 - b3k)]
    return out


def _gms_fit_fwd(mean: Tensor, var: Tensor, m3: Tensor, weight: float, method: int, iters: int, lr: float,
                 var_floor: float, n_el: int):
    """Launch the elementwise fit; inputs of one shape and dtype (float32 / float64). Returns (mu1, mu2, v)."""
    if mean.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"gms_fit (triton): float32 or float64 expected, got {mean.dtype}")
    check_device("gms_fit_triton", mean)
    M1, V, M3 = mean.contiguous(), var.contiguous(), m3.contiguous()
    o1, o2, ov = torch.empty_like(M1), torch.empty_like(M1), torch.empty_like(M1)
    n = M1.numel()
    if n == 0:
        return o1, o2, ov
    w = float(weight)
    c3 = w * (1.0 - w) * (1.0 - 2.0 * w)
    scale = 2.0 / float(n_el if n_el > 0 else n)
    b1, b2, _ = _BETAS  # b3 == b2 in the official solver
    table = [w, 1.0 - w, c3 if c3 != 0.0 else 1.0, scale, float(var_floor), b1, 1.0 - b1, b2, 1.0 - b2, 1e-8, 0.1, 1.2, 1e-3, 0.998]
    table += adan_schedule(iters, lr) if method == 1 else []
    sched = torch.tensor(table, dtype=M1.dtype, device=M1.device)
    BLOCK = 128 if _INTERPRET else 256
    grid = (triton.cdiv(n, BLOCK),)
    launcher(_gms_fit_kernel, M1)[grid](M1, V, M3, o1, o2, ov, sched, n, int(iters) if method == 1 else 0,
                                        METHOD=int(method), HALF=(c3 == 0.0), BLOCK=BLOCK)
    return o1, o2, ov


@triton_op("gmmkernels::gms_fit_triton", mutates_args=())
def _gms_fit_triton_op(mean: Tensor, var: Tensor, m3: Tensor, weight: float, method: int, iters: int, lr: float,
                       var_floor: float, n_el: int) -> tuple[Tensor, Tensor, Tensor]:
    return _gms_fit_fwd(mean, var, m3, weight, method, iters, lr, var_floor, n_el)


def _no_derivative(ctx, *grads):
    raise RuntimeError("gmmkernels.gms_fit has no derivative: it is a sampling-time op (detach its inputs)")


_gms_fit_triton_op.register_autograd(_no_derivative, setup_context=lambda ctx, inputs, output: None)


def gms_fit_triton(mean: Tensor, var: Tensor, m3: Tensor, weight: float, method: int, iters: int, lr: float,
                   var_floor: float, n_el: int = 0):
    """The fused fit through ``torch.ops.gmmkernels.gms_fit_triton``. Returns (mu1, mu2, v)."""
    return torch.ops.gmmkernels.gms_fit_triton.default(mean, var, m3, float(weight), int(method), int(iters), float(lr),
                                                       float(var_floor), int(n_el))
