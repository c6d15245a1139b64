"""Triton backend of the fused mixture statistics, diagonal covariances (spherical = diag with equal entries).

Semantics are those of ``reference.mixture_stats_kernel_ref(x, means, prec, logc, full=False)``::

    x [B, N, D], means [B, K, D], prec = w [B, K, D] (inverse standard deviation per dimension), logc [B, K]
    logit[n, k] = logc_k - 1/2 sum_d w_kd^2 (x_nd - mu_kd)^2
    logp = LSE_k logit,  r = softmax_k logit,  score = sum_k r_k (-w_k^2 * (x - mu_k))

Algorithm (FlashAttention-shaped). One program per (row block, mixture b); it loops over tiles of
BLOCK_K components. With p = w^2 and a = w^2 mu the logits are one GEMM pair plus a bias,

    logit = x a^T - 1/2 (x*x) p^T + (logc - 1/2 sum_d a mu),

accumulated over D chunks with ``tl.dot``; an online log-sum-exp keeps the running max m and sum l and
rescales the score accumulators, which are again GEMMs of the probability tile P = exp(logit - m):
acc1 = P a, acc2 = P p, score = (acc1 - x * acc2) / l. Nothing of size N x K is written unless
responsibilities are requested: then the raw logits of the tile are stored into the (fp32) resp
output while streaming, and once logp is known the same program re-reads them and overwrites them
with exp(logit - logp) (a light second sweep over N x K, no recomputation of the GEMM).

D handling: if D <= BLOCK_D (cap 128 on CUDA) the x tile and the score accumulators stay in
registers ("one chunk" path). Otherwise every component tile loops over D chunks for the logits and
the score is accumulated in the fp32 score output (read-modify-write of the row block's own rows,
rescaled by the online-softmax factor; no other program touches those rows), then divided by l in a
final sweep. Any D works; the cost of the large-D path is one extra read+write of the row block's
score per component tile.

Backward (same VJP as the C++ op ``mixture_stats_backward``), g = grad_logp, G = grad_score, H = grad_resp:
    a_k  = r_k [ g + G.s_k - G.S + H_k - sum_j r_j H_j ],  s_k = -w_k^2 (x - mu_k), S = score
    grad_x    = sum_k a_k (w_k^2 mu_k) - x * sum_k a_k w_k^2 - G * sum_k r_k w_k^2
    grad_mu_k = w_k^2 * ( sum_n a_k x - mu_k sum_n a_k + sum_n r_k G )
    grad_w_k  = -w_k * ( sum_n a_k x^2 - 2 mu_k sum_n a_k x + mu_k^2 sum_n a_k + 2 sum_n r_k G x - 2 mu_k sum_n r_k G )
    grad_logc_k = sum_n a_k
The per-row scalars G.S and sum_j r_j H_j come from the saved forward outputs (one torch reduction
each), so a_k is local to a component tile. A row-block kernel recomputes the logits, forms r and a,
accumulates grad_x (GEMMs of a and r with [a, p]) and writes the per-row-block partial moments
a^T x, a^T x^2, r^T G, r^T (G x) and sum a into a workspace [B, nblocks, {2 or 4}, K, D]; a torch
``.sum`` over the blocks (deterministic, no atomics) and a few elementwise ops give the parameter
gradients. Workspace: 4 * (2 or 4) * B * ceil(N / BLOCK_N) * K * D bytes.

Precision modes (``precision``), all accumulating in fp32:
  "ieee": tl.dot(..., input_precision="ieee"), fp32 products.
  "tf32": tl.dot(..., input_precision="tf32") (10-bit mantissa operands, tensor cores).
  "bf16": operands cast to bfloat16 (8-bit mantissa), tensor cores.
The GEMM expansion cancels: the logit error is about u * |x * w^2 mu|_2 (random-sign rounding; up to
the l1 norm in the worst case) plus u * |x^2 w^2|, i.e. it grows like u |x||mu| / sigma^2, while the
direct difference (x - mu)^2 (the CUDA C++ kernel) only errs by u * |logit|. Measured on an H100
(triton 3.6): x = mu_k + sigma z for a random component k, mu ~ N(0, 1), w = exp(0.3 N(0,1)) / sigma,
B=1, N=2048, K=16; max |logp error| in nats against float64, and max |score error| / max |score|:

    D    sigma | direct fp32 | ieee           | tf32           | bf16
    32   1     | 6e-6        | 4e-5 / 1e-6    | 4e-2 / 3e-3    | 3e-1 / 3e-2
    32   0.1   | 7e-6        | 2e-3 / 1e-7    | 4e0  / 2e-3    | 2e1  / 2e-2
    32   0.01  | 5e-6        | 3e-1 / 2e-6    | 4e2  / 1e-2    | 1e3  / 7e-2
    512  1     | 5e-5        | 2e-4 / 5e-8    | 1e-1 / 5e-4    | 8e-1 / 2e-3
    512  0.1   | 5e-5        | 1e-2 / 3e-7    | 3e1  / 3e-3    | 6e1  / 2e-2
    512  0.01  | 5e-5        | 2e0  / 1e-6    | 3e3  / 3e-2    | 5e3  / 2e-1

("direct fp32" = the materialising reference evaluated in float32.) So "ieee" in GEMM form is visibly
worse than the direct difference at small sigma (error ~ 1/sigma^2 in log p), and tf32/bf16 are only
usable for log p / responsibilities at sigma >~ 1; the score degrades much more gracefully (its error is
relative to |score| ~ 1/sigma). At diffusion noise levels sigma << |x| use the C++ kernels (direct
difference) for log p. Parameter gradients use the same expanded moments (sum a x^2 - 2 mu sum a x +
mu^2 sum a) and inherit the same relative error.

H100 kernel times (B=1, fp32 inputs; logp only / logp+score / backward with grad_logp+grad_score):
    N=65536 K=64 D=32:   ieee 92 / 111 / 273 us, tf32 12 / 19 / 94 us, bf16 9 / 16 / 42 us
    N=4096 K=16 D=3072:  ieee 268 / 436 / 713 us, tf32 58 / 234 / 345 us, bf16 55 / 230 / 292 us
    N=65536 K=16 D=128:  ieee 168 / 212 / 334 us, tf32 28 / 96 / 132 us, bf16 18 / 52 / 87 us
(the float32 materialising reference: ~2.5-3.7 ms at these shapes). Host overhead per call is ~70-100 us
for the forward launcher and more for the backward (its torch pre/epilogue: ~20 small ops).

Dtypes: float32, float16 and bfloat16 inputs; all arithmetic is fp32 and outputs come back in the input
dtype. float64 is rejected with a TypeError (the Triton path would silently compute in fp32).

Entry points:
  mixture_stats_triton(x, means, prec, logc, with_score, with_resp, precision) -> (logp, score, resp)
      differentiable; calls ``torch.ops.gmmkernels.mixture_stats_triton`` (a ``torch.library.triton_op``,
      visible to torch.compile on CUDA) whose autograd calls ``gmmkernels::mixture_stats_triton_backward``.
      Works on CUDA tensors, and on CPU tensors when TRITON_INTERPRET=1 was set before import (eager only:
      fake-tensor tracing of an interpreted kernel is not supported).
  _mixture_stats_fwd / _mixture_stats_bwd: plain launchers (no torch.library), same devices.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op

from ._utils import INTERPRET as _INTERPRET
from ._utils import check_device, launcher

_PRECISIONS = {"ieee": 0, "tf32": 1, "bf16": 2}
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# One fixed, small configuration under the interpreter (speed; BLOCK_D cap 32 so D > 32 exercises the
# multi-chunk path). Dimensions of tl.dot operands must be >= 16.
_INTERPRET_CONFIG = dict(BLOCK_N=16, BLOCK_K=16, BLOCK_D_MAX=32, num_warps=1, num_stages=1)


# ----------------------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _mm(a, b, PREC: tl.constexpr):
    """a @ b with fp32 accumulation in the requested operand precision."""
    if PREC == 0:
        out = tl.dot(a, b, input_precision="ieee")
    elif PREC == 1:
        out = tl.dot(a, b, input_precision="tf32")
    elif PREC == 2:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        # bf16 operands, exact fp32 products and accumulation: the same numbers as PREC == 2. Used under the
        # interpreter, whose tl.dot on bfloat16 operands returns garbage (triton 3.6).
        out = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    return out


@triton.jit
def _load_comp(MU, W, k2d, d2d, kd_mask):
    """Component tile: mu, p = w^2, a = w^2 mu, each [BLOCK_K, BLOCK_D] fp32 (0 where masked)."""
    mu = tl.load(MU + k2d + d2d, mask=kd_mask, other=0.0).to(tl.float32)
    w = tl.load(W + k2d + d2d, mask=kd_mask, other=0.0).to(tl.float32)
    p = w * w
    return mu, w, p, p * mu


@triton.jit
def _mixture_stats_fwd_kernel(
    X, MU, W, LOGC, LOGP, SCORE, RESP,
    N, K, D,
    WITH_SCORE: tl.constexpr, WITH_RESP: tl.constexpr, PREC: tl.constexpr, ONE_CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    X += b * N * D
    MU += b * K * D
    W += b * K * D
    LOGC += b * K
    LOGP += b * N
    SCORE += b * N * D
    RESP += b * N * K

    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    offs_k = tl.arange(0, BLOCK_K)

    m_i = tl.full([BLOCK_N], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_N], tl.float32)
    if ONE_CHUNK:
        dmask = offs_d < D
        xd_mask = rmask[:, None] & dmask[None, :]
        x = tl.load(X + rows64[:, None] * D + offs_d[None, :], mask=xd_mask, other=0.0).to(tl.float32)
        xx = x * x
        acc1 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        acc2 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        kmask = ks < K
        k2d = ks[:, None] * D
        if ONE_CHUNK:
            kd_mask = kmask[:, None] & dmask[None, :]
            mu, w, p, a = _load_comp(MU, W, k2d, offs_d[None, :], kd_mask)
            s = _mm(x, tl.trans(a), PREC) - 0.5 * _mm(xx, tl.trans(p), PREC)
            cq = tl.sum(a * mu, axis=1)
        else:
            s = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            cq = tl.zeros([BLOCK_K], tl.float32)
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + offs_d
                dm = ds < D
                xc = tl.load(X + rows64[:, None] * D + ds[None, :], mask=rmask[:, None] & dm[None, :],
                             other=0.0).to(tl.float32)
                muc, wc, pc, ac = _load_comp(MU, W, k2d, ds[None, :], kmask[:, None] & dm[None, :])
                s += _mm(xc, tl.trans(ac), PREC) - 0.5 * _mm(xc * xc, tl.trans(pc), PREC)
                cq += tl.sum(ac * muc, axis=1)
        logc = tl.load(LOGC + ks, mask=kmask, other=0.0).to(tl.float32)
        logit = s + (logc - 0.5 * cq)[None, :]
        logit = tl.where(kmask[None, :], logit, float("-inf"))
        if WITH_RESP:
            tl.store(RESP + rows64[:, None] * K + ks[None, :], logit, mask=rmask[:, None] & kmask[None, :])

        m_new = tl.maximum(m_i, tl.max(logit, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        pr = tl.exp(logit - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(pr, axis=1)
        m_i = m_new
        if WITH_SCORE:
            if ONE_CHUNK:
                acc1 = acc1 * alpha[:, None] + _mm(pr, a, PREC)
                acc2 = acc2 * alpha[:, None] + _mm(pr, p, PREC)
            else:
                for d0 in range(0, D, BLOCK_D):
                    ds = d0 + offs_d
                    dm = ds < D
                    xd_m = rmask[:, None] & dm[None, :]
                    sp = SCORE + rows64[:, None] * D + ds[None, :]
                    xc = tl.load(X + rows64[:, None] * D + ds[None, :], mask=xd_m, other=0.0).to(tl.float32)
                    muc, wc, pc, ac = _load_comp(MU, W, k2d, ds[None, :], kmask[:, None] & dm[None, :])
                    sc = tl.load(sp, mask=xd_m, other=0.0)
                    sc = sc * alpha[:, None] + _mm(pr, ac, PREC) - xc * _mm(pr, pc, PREC)
                    tl.store(sp, sc, mask=xd_m)
                tl.debug_barrier()

    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
    logp = m_safe + tl.log(l_i)
    tl.store(LOGP + rows64, logp, mask=rmask)
    inv_l = 1.0 / l_i
    if WITH_SCORE:
        if ONE_CHUNK:
            score = (acc1 - x * acc2) * inv_l[:, None]
            tl.store(SCORE + rows64[:, None] * D + offs_d[None, :], score, mask=xd_mask)
        else:
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + offs_d
                xd_m = rmask[:, None] & (ds < D)[None, :]
                sp = SCORE + rows64[:, None] * D + ds[None, :]
                tl.store(sp, tl.load(sp, mask=xd_m, other=0.0) * inv_l[:, None], mask=xd_m)
    if WITH_RESP:
        tl.debug_barrier()
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + offs_k
            rk_m = rmask[:, None] & (ks < K)[None, :]
            rp = RESP + rows64[:, None] * K + ks[None, :]
            tl.store(rp, tl.exp(tl.load(rp, mask=rk_m, other=0.0) - logp[:, None]), mask=rk_m)


@triton.jit
def _mixture_stats_bwd_kernel(
    X, MU, W, LOGC, LOGP, GEFF, G, H, GX, WS, SA,
    N, K, D, NB,
    NQ: tl.constexpr, HAS_G: tl.constexpr, HAS_H: tl.constexpr, PREC: tl.constexpr, ONE_CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # a[n, k] = r[n, k] * (geff[n] + G_n . s_k + H[n, k]),  geff = g - G.S - sum_j r_j H_j (precomputed)
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    X += b * N * D
    MU += b * K * D
    W += b * K * D
    LOGC += b * K
    LOGP += b * N
    GEFF += b * N
    GX += b * N * D
    if HAS_G:
        G += b * N * D
    if HAS_H:
        H += b * N * K
    blk = b * NB + pid_n
    WS += blk * NQ * K * D
    SA += blk * K

    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    offs_k = tl.arange(0, BLOCK_K)

    logp = tl.load(LOGP + rows64, mask=rmask, other=0.0).to(tl.float32)
    geff = tl.load(GEFF + rows64, mask=rmask, other=0.0).to(tl.float32)
    if ONE_CHUNK:
        dmask = offs_d < D
        xd_mask = rmask[:, None] & dmask[None, :]
        xoff = rows64[:, None] * D + offs_d[None, :]
        x = tl.load(X + xoff, mask=xd_mask, other=0.0).to(tl.float32)
        xx = x * x
        if HAS_G:
            gs = tl.load(G + xoff, mask=xd_mask, other=0.0).to(tl.float32)
            gsx = gs * x
        gx1 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)  # sum_k a_k (w^2 mu)_k
        gx2 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)  # sum_k a_k w_k^2
        gx3 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)  # sum_k r_k w_k^2

    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        kmask = ks < K
        k2d = ks[:, None] * D
        if ONE_CHUNK:
            kd_mask = kmask[:, None] & dmask[None, :]
            mu, w, p, a = _load_comp(MU, W, k2d, offs_d[None, :], kd_mask)
            s = _mm(x, tl.trans(a), PREC) - 0.5 * _mm(xx, tl.trans(p), PREC)
            cq = tl.sum(a * mu, axis=1)
            if HAS_G:
                gdot = _mm(gs, tl.trans(a), PREC) - _mm(gsx, tl.trans(p), PREC)
        else:
            s = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            cq = tl.zeros([BLOCK_K], tl.float32)
            gdot = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + offs_d
                dm = ds < D
                xd_m = rmask[:, None] & dm[None, :]
                xoff_c = rows64[:, None] * D + ds[None, :]
                xc = tl.load(X + xoff_c, mask=xd_m, other=0.0).to(tl.float32)
                muc, wc, pc, ac = _load_comp(MU, W, k2d, ds[None, :], kmask[:, None] & dm[None, :])
                s += _mm(xc, tl.trans(ac), PREC) - 0.5 * _mm(xc * xc, tl.trans(pc), PREC)
                cq += tl.sum(ac * muc, axis=1)
                if HAS_G:
                    gc = tl.load(G + xoff_c, mask=xd_m, other=0.0).to(tl.float32)
                    gdot += _mm(gc, tl.trans(ac), PREC) - _mm(gc * xc, tl.trans(pc), PREC)
        logc = tl.load(LOGC + ks, mask=kmask, other=0.0).to(tl.float32)
        logit = s + (logc - 0.5 * cq)[None, :]
        rk_mask = rmask[:, None] & kmask[None, :]
        logit = tl.where(rk_mask, logit, float("-inf"))
        r = tl.where(rk_mask, tl.exp(logit - logp[:, None]), 0.0)
        coef = geff[:, None] + tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        if HAS_G:
            coef += gdot
        if HAS_H:
            coef += tl.load(H + rows64[:, None] * K + ks[None, :], mask=rk_mask, other=0.0).to(tl.float32)
        av = r * coef
        tl.store(SA + ks, tl.sum(av, axis=0), mask=kmask)
        at = tl.trans(av)
        rt = tl.trans(r)
        if ONE_CHUNK:
            gx1 += _mm(av, a, PREC)
            gx2 += _mm(av, p, PREC)
            if HAS_G:
                gx3 += _mm(r, p, PREC)
            wsp = WS + k2d + offs_d[None, :]
            tl.store(wsp, _mm(at, x, PREC), mask=kd_mask)
            tl.store(wsp + K * D, _mm(at, xx, PREC), mask=kd_mask)
            if HAS_G:
                tl.store(wsp + 2 * K * D, _mm(rt, gs, PREC), mask=kd_mask)
                tl.store(wsp + 3 * K * D, _mm(rt, gsx, PREC), mask=kd_mask)
        else:
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + offs_d
                dm = ds < D
                xd_m = rmask[:, None] & dm[None, :]
                kd_m = kmask[:, None] & dm[None, :]
                xoff_c = rows64[:, None] * D + ds[None, :]
                xc = tl.load(X + xoff_c, mask=xd_m, other=0.0).to(tl.float32)
                muc, wc, pc, ac = _load_comp(MU, W, k2d, ds[None, :], kd_m)
                gxp = GX + xoff_c
                gxc = tl.load(gxp, mask=xd_m, other=0.0) + _mm(av, ac, PREC) - xc * _mm(av, pc, PREC)
                wsp = WS + k2d + ds[None, :]
                tl.store(wsp, _mm(at, xc, PREC), mask=kd_m)
                tl.store(wsp + K * D, _mm(at, xc * xc, PREC), mask=kd_m)
                if HAS_G:
                    gc = tl.load(G + xoff_c, mask=xd_m, other=0.0).to(tl.float32)
                    gxc -= gc * _mm(r, pc, PREC)
                    tl.store(wsp + 2 * K * D, _mm(rt, gc, PREC), mask=kd_m)
                    tl.store(wsp + 3 * K * D, _mm(rt, gc * xc, PREC), mask=kd_m)
                tl.store(gxp, gxc, mask=xd_m)
            tl.debug_barrier()

    if ONE_CHUNK:
        gx = gx1 - x * gx2
        if HAS_G:
            gx -= gs * gx3
        tl.store(GX + xoff, gx, mask=xd_mask)


# ----------------------------------------------------------------------------------------------------------
# launchers


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _prec_code(precision: str) -> int:
    code = _PRECISIONS[precision]
    return 3 if (code == 2 and _INTERPRET) else code


def _config(D: int, K: int, device: torch.device, override: Optional[dict] = None, bwd: bool = False,
            precision: str = "ieee") -> dict:
    """Block sizes (static; chosen by D and precision). No torch.cuda queries, so CPU tensors work under the
    interpreter. Measured on an H100: "ieee" dots (SIMT FMA) spill badly with 64x64 tiles (10x slower), hence
    smaller tiles for that mode."""
    if device.type != "cuda" or _INTERPRET:
        cfg = dict(_INTERPRET_CONFIG)
    elif precision == "ieee":
        if bwd:
            cfg = dict(BLOCK_N=32, BLOCK_K=16, BLOCK_D_MAX=32, num_warps=4, num_stages=2)
        else:
            cfg = dict(BLOCK_N=32, BLOCK_K=32, BLOCK_D_MAX=64, num_warps=4, num_stages=2)
    else:
        if D <= 32:
            cfg = dict(BLOCK_N=64, BLOCK_K=64, BLOCK_D_MAX=32, num_warps=4, num_stages=2)
        elif D <= 64:
            cfg = dict(BLOCK_N=64, BLOCK_K=32, BLOCK_D_MAX=64, num_warps=4, num_stages=2)
        elif D <= 128 and not bwd:
            cfg = dict(BLOCK_N=64, BLOCK_K=32, BLOCK_D_MAX=128, num_warps=8, num_stages=2)
        else:
            cfg = dict(BLOCK_N=64, BLOCK_K=32, BLOCK_D_MAX=64, num_warps=4, num_stages=2)
    if override:
        cfg.update(override)
    block_d = min(max(16, _next_pow2(max(D, 1))), cfg.pop("BLOCK_D_MAX"))
    cfg["BLOCK_D"] = max(16, block_d)
    cfg["BLOCK_K"] = max(16, min(cfg["BLOCK_K"], _next_pow2(max(K, 1))))
    cfg["ONE_CHUNK"] = D <= cfg["BLOCK_D"]
    return cfg


def _check(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, precision: str, fn: str) -> None:
    if precision not in _PRECISIONS:
        raise ValueError(f"{fn}: precision must be one of {tuple(_PRECISIONS)}, got {precision!r}")
    if x.dim() != 3 or means.dim() != 3 or prec.dim() != 3 or logc.dim() != 2:
        raise ValueError(
            f"{fn}: expected x [B,N,D], means [B,K,D], prec [B,K,D] (diagonal), logc [B,K]; got "
            f"{tuple(x.shape)}, {tuple(means.shape)}, {tuple(prec.shape)}, {tuple(logc.shape)}")
    B, N, D = x.shape
    K = means.shape[1]
    if means.shape != (B, K, D) or prec.shape != (B, K, D) or logc.shape != (B, K):
        raise ValueError(
            f"{fn}: shape mismatch: x {tuple(x.shape)}, means {tuple(means.shape)}, prec {tuple(prec.shape)}, "
            f"logc {tuple(logc.shape)}")
    for name, t in (("x", x), ("means", means), ("prec", prec), ("logc", logc)):
        if t.dtype not in _DTYPES:
            raise TypeError(f"{fn}: '{name}' must be float32, float16 or bfloat16 (Triton computes in fp32), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{fn}: all tensors must be on one device; '{name}' is on {t.device}, x on {x.device}")
    check_device(fn, x)


def _mixture_stats_fwd(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, with_score: bool = True,
                       with_resp: bool = False, precision: str = "ieee", *, config: Optional[dict] = None):
    """Plain launcher of the forward kernel. Returns (logp [B,N], score [B,N,D] or [0], resp [B,N,K] or [0])."""
    _check(x, means, prec, logc, precision, "mixture_stats_triton")
    B, N, D = x.shape
    K = means.shape[1]
    dt = x.dtype
    f32 = torch.float32
    cfg = _config(D, K, x.device, config, precision=precision)
    one_chunk = cfg.pop("ONE_CHUNK")
    logp = torch.empty((B, N), device=x.device, dtype=f32)
    if with_score:
        alloc = torch.empty if one_chunk else torch.zeros
        score = alloc((B, N, D), device=x.device, dtype=f32)
    else:
        score = torch.empty((0,), device=x.device, dtype=f32)
    resp = torch.empty((B, N, K) if with_resp else (0,), device=x.device, dtype=f32)
    if B * N > 0:
        if K == 0:
            logp.fill_(float("-inf"))
            if with_score:
                score.zero_()
        else:
            xc, mc, pc, lc = x.contiguous(), means.contiguous(), prec.contiguous(), logc.contiguous()
            grid = (triton.cdiv(N, cfg["BLOCK_N"]), B)
            launcher(_mixture_stats_fwd_kernel, x)[grid](
                xc, mc, pc, lc, logp, score if with_score else logp, resp if with_resp else logp,
                N, K, D,
                WITH_SCORE=bool(with_score), WITH_RESP=bool(with_resp), PREC=_prec_code(precision),
                ONE_CHUNK=one_chunk, **cfg)
    if dt != f32:
        logp, score, resp = logp.to(dt), score.to(dt), resp.to(dt)
    return logp, score, resp


def _present(t: Optional[Tensor]) -> bool:
    return t is not None and t.numel() > 0


def _mixture_stats_bwd(grad_logp: Optional[Tensor], grad_score: Optional[Tensor], grad_resp: Optional[Tensor],
                       x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, logp: Tensor,
                       score: Optional[Tensor] = None, resp: Optional[Tensor] = None, precision: str = "ieee",
                       *, config: Optional[dict] = None):
    """Plain launcher of the VJP. ``score``/``resp``: the forward outputs, needed (and recomputed if not given)
    only when grad_score/grad_resp are given. Returns (grad_x, grad_means, grad_prec, grad_logc)."""
    _check(x, means, prec, logc, precision, "mixture_stats_triton_backward")
    B, N, D = x.shape
    K = means.shape[1]
    f32 = torch.float32
    dev = x.device
    has_g, has_h = _present(grad_score), _present(grad_resp)
    if (has_g and not _present(score)) or (has_h and not _present(resp)):
        _, score, resp = _mixture_stats_fwd(x, means, prec, logc, has_g, has_h, precision, config=config)
    geff = (grad_logp.to(f32) if grad_logp is not None else torch.zeros((B, N), device=dev, dtype=f32))
    if has_g:
        geff = geff - (grad_score.to(f32) * score.to(f32)).sum(-1)
    if has_h:
        geff = geff - (grad_resp.to(f32) * resp.to(f32)).sum(-1)
    geff = geff.contiguous()

    cfg = _config(D, K, dev, config, bwd=True, precision=precision)
    one_chunk = cfg.pop("ONE_CHUNK")
    nb = triton.cdiv(N, cfg["BLOCK_N"]) if N > 0 else 0
    nq = 4 if has_g else 2
    grad_x = (torch.empty if one_chunk else torch.zeros)((B, N, D), device=dev, dtype=f32)
    ws = torch.empty((B, nb, nq, K, D), device=dev, dtype=f32)
    sa = torch.empty((B, nb, K), device=dev, dtype=f32)
    if B * N > 0 and K > 0:
        gsc = grad_score.contiguous() if has_g else geff
        grc = grad_resp.contiguous() if has_h else geff
        launcher(_mixture_stats_bwd_kernel, x)[(nb, B)](
            x.contiguous(), means.contiguous(), prec.contiguous(), logc.contiguous(), logp.contiguous(), geff,
            gsc, grc, grad_x, ws, sa,
            N, K, D, nb,
            NQ=nq, HAS_G=has_g, HAS_H=has_h, PREC=_prec_code(precision), ONE_CHUNK=one_chunk, **cfg)
    elif K == 0 or N == 0:
        grad_x.zero_()
    mu = means.to(f32)
    w = prec.to(f32)
    p = w * w
    s_ax = ws[:, :, 0].sum(1)
    s_axx = ws[:, :, 1].sum(1)
    s_a = sa.sum(1)
    s_a3 = s_a.unsqueeze(-1)
    gmu = s_ax - mu * s_a3
    inner = s_axx - 2.0 * mu * s_ax + mu * mu * s_a3
    if has_g:
        s_rg = ws[:, :, 2].sum(1)
        s_rgx = ws[:, :, 3].sum(1)
        gmu = gmu + s_rg
        inner = inner + 2.0 * (s_rgx - mu * s_rg)
    grad_means = (p * gmu).to(means.dtype)
    grad_prec = (-w * inner).to(prec.dtype)
    return grad_x.to(x.dtype), grad_means, grad_prec, s_a.to(logc.dtype)


# ----------------------------------------------------------------------------------------------------------
# torch.library registration


@triton_op("gmmkernels::mixture_stats_triton", mutates_args=())
def _mixture_stats_triton_op(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, with_score: bool,
                             with_resp: bool, precision: str) -> tuple[Tensor, Tensor, Tensor]:
    return _mixture_stats_fwd(x, means, prec, logc, with_score, with_resp, precision)


@triton_op("gmmkernels::mixture_stats_triton_backward", mutates_args=())
def _mixture_stats_triton_backward_op(grad_logp: Tensor, grad_score: Optional[Tensor], grad_resp: Optional[Tensor],
                                      x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, logp: Tensor,
                                      score: Optional[Tensor], resp: Optional[Tensor],
                                      precision: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _mixture_stats_bwd(grad_logp, grad_score, grad_resp, x, means, prec, logc, logp, score, resp, precision)


def _setup_context(ctx, inputs, output):
    x, means, prec, logc, with_score, with_resp, precision = inputs
    logp, score, resp = output
    ctx.precision = precision
    ctx.save_for_backward(x, means, prec, logc, logp, score, resp)


def _backward(ctx, grad_logp, grad_score, grad_resp):
    x, means, prec, logc, logp, score, resp = ctx.saved_tensors
    if grad_logp is None:
        grad_logp = torch.zeros_like(logp)
    if grad_score is not None and grad_score.numel() == 0:
        grad_score = None
    if grad_resp is not None and grad_resp.numel() == 0:
        grad_resp = None
    gx, gmu, gw, gc = torch.ops.gmmkernels.mixture_stats_triton_backward.default(
        grad_logp, grad_score, grad_resp, x, means, prec, logc, logp,
        score if grad_score is not None else None, resp if grad_resp is not None else None, ctx.precision)
    return gx, gmu, gw, gc, None, None, None


_mixture_stats_triton_op.register_autograd(_backward, setup_context=_setup_context)


def mixture_stats_triton(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, with_score: bool = True,
                         with_resp: bool = False, precision: str = "ieee"):
    """Differentiable fused mixture statistics (diag). Returns (logp [B,N], score [B,N,D] or [0], resp [B,N,K] or [0])."""
    return torch.ops.gmmkernels.mixture_stats_triton.default(x, means, prec, logc, bool(with_score),
                                                            bool(with_resp), str(precision))
