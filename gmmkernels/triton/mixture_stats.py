"""Triton backend of the fused mixture statistics, diagonal covariances (spherical = diag with equal entries).

Semantics are those of ``reference.mixture_stats_kernel_ref(x, means, prec, logc, full=False)``::

    x [B, N, D], means [B, K, D], prec = w [B, K, D] (inverse standard deviation per dimension), logc [B, K]
    logit[n, k] = logc_k - 1/2 sum_d w_kd^2 (x_nd - mu_kd)^2
    logp = LSE_k logit,  r = softmax_k logit,  score = sum_k r_k (-w_k^2 * (x - mu_k))

Algorithm (FlashAttention-shaped). One program per (row block, mixture b); it loops over tiles of
BLOCK_K components. precision="ieee" (the default) forms every logit by direct differences,
-1/2 sum_d (w_kd (x_nd - mu_kd))^2, as elementwise fp32 products of a [BLOCK_N, BLOCK_K, BLOCK_D] tile
reduced with tl.sum (no tl.dot): as accurate as the CPU fp32 kernel at any distance from the components.
The GEMM-form modes ("fp32-gemm", "tf32", "bf16") use, with p = w^2 and a = w^2 mu, one GEMM pair plus a
bias,

    logit = x a^T - 1/2 (x*x) p^T + (logc - 1/2 sum_d a mu),

accumulated over D chunks with ``tl.dot``; an online log-sum-exp keeps the running max m and sum l and
rescales the score accumulator, sum_k P_k w_k^2 (mu_k - x) of the probability tile P = exp(logit - m)
(direct: elementwise; GEMM form: P a - x * (P p)), score = acc / l. Nothing of size N x K is written unless
responsibilities are requested: then the raw logits of the tile are stored into the (fp32) resp
output while streaming, and once logp is known the same program re-reads them and overwrites them
with exp(logit - m) / l (a light second sweep over N x K, no recomputation of the logits; not
exp(logit - logp), since logp carries a rounding error of u |logp| that would enter every r).

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
A row-block kernel makes two passes over the components. Pass 1 recomputes the logits and forms
Z = sum_k exp(logit_k - logp), sum_k exp(logit_k - logp) G.s_k and sum_k exp(logit_k - logp) H_k (the saved
logp is only the shift: dividing by Z cancels its rounding, so r = exp(logit - logp) / Z is the log-space
softmax). Pass 2 forms r and a, with each difference G.s_k - G.S and H_k - sum_j r_j H_j taken before g is
added (far from the components |G.s_k| >> |g|), accumulates grad_x and writes per-row-block partial moments
into a workspace [B, nblocks, {2 or 4}, K, D]: centred ones in "ieee" (sum_n a (x - mu), sum_n a (x - mu)^2,
sum_n r G, sum_n r G (x - mu)), raw ones in the GEMM-form modes (a^T x, a^T x^2, r^T G, r^T (G x)); a torch
``.sum`` over the blocks (deterministic, no atomics) and a few elementwise ops give the parameter
gradients. Workspace: 4 * (2 or 4) * B * ceil(N / BLOCK_N) * K * D bytes.

Precision modes (``precision``), all accumulating in fp32:
  "ieee": direct differences (x - mu)^2, elementwise fp32 products and tl.sum reductions (no tl.dot).
  "fp32-gemm": the GEMM form, tl.dot(..., input_precision="ieee"), fp32 products.
  "tf32": the GEMM form, tl.dot(..., input_precision="tf32") (10-bit mantissa operands, tensor cores).
  "bf16": the GEMM form, operands cast to bfloat16 (8-bit mantissa), tensor cores.
The GEMM expansion cancels: the logit error is about u * |x * w^2 mu|_2 (random-sign rounding; up to
the l1 norm in the worst case) plus u * |x^2 w^2|, i.e. it grows like u |x||mu| / sigma^2, while the
direct difference (x - mu)^2 ("ieee", and the C++ kernels) only errs by u * |logit|. Measured on an H100
(triton 3.6), before "ieee" became the direct form (the "ieee" column is today's "fp32-gemm"): x = mu_k + sigma z for a random component k, mu ~ N(0, 1), w = exp(0.3 N(0,1)) / sigma,
B=1, N=2048, K=16; max |logp error| in nats against float64, and max |score error| / max |score|:

    D    sigma | direct fp32 | fp32-gemm      | tf32           | bf16
    32   1     | 6e-6        | 4e-5 / 1e-6    | 4e-2 / 3e-3    | 3e-1 / 3e-2
    32   0.1   | 7e-6        | 2e-3 / 1e-7    | 4e0  / 2e-3    | 2e1  / 2e-2
    32   0.01  | 5e-6        | 3e-1 / 2e-6    | 4e2  / 1e-2    | 1e3  / 7e-2
    512  1     | 5e-5        | 2e-4 / 5e-8    | 1e-1 / 5e-4    | 8e-1 / 2e-3
    512  0.1   | 5e-5        | 1e-2 / 3e-7    | 3e1  / 3e-3    | 6e1  / 2e-2
    512  0.01  | 5e-5        | 2e0  / 1e-6    | 3e3  / 3e-2    | 5e3  / 2e-1

("direct fp32" = the materialising reference evaluated in float32.) So the fp32 GEMM form is visibly
worse than the direct difference at small sigma (error ~ 1/sigma^2 in log p; 1 nat at |x - mu| / sigma ~ 1e3
and hundreds at 1e4), and tf32/bf16 are only usable for log p / responsibilities at sigma >~ 1; the score
degrades much more gracefully (its error is relative to |score| ~ 1/sigma). The GEMM-form parameter
gradients use the expanded moments (sum a x^2 - 2 mu sum a x + mu^2 sum a) and inherit the same relative
error; "ieee" uses centred moments. python_tests/_tolerances.py (gemm_logit_bound) states the worst-case
bound the tests check: |d logit| <= (2 u_op + D u_32) 1/2 sum_d w_d^2 (|x_d| + |mu_d|)^2.

H100 kernel times (B=1, fp32 inputs; logp only / logp+score / backward with grad_logp+grad_score), measured
before "ieee" became the direct form, so "ieee" below is today's "fp32-gemm". The direct "ieee" path (its
[BLOCK_N, BLOCK_K, BLOCK_D] products run on the FMA units; tiles in _config are a first guess) has not been
timed on a GPU yet:
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

from .. import _autograd
from ..reference.mixture_stats import mixture_stats_backward_ref
from ._utils import INTERPRET as _INTERPRET
from ._utils import batch_ranges, check_device, launcher

# precision -> operand precision code of the GEMM-form helpers; "ieee" runs the direct-difference helpers instead
_PRECISIONS = {"ieee": 0, "fp32-gemm": 0, "tf32": 1, "bf16": 2}
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# One fixed, small configuration under the interpreter (speed; BLOCK_D cap 32 so D > 32 exercises the
# multi-chunk path). Dimensions of tl.dot operands must be >= 16.
_INTERPRET_CONFIG = dict(BLOCK_N=16, BLOCK_K=16, BLOCK_D_MAX=32, num_warps=1, num_stages=1)


# ----------------------------------------------------------------------------------------------------------
# kernels
#
# One forward and one backward kernel serve every mode; DIRECT (precision "ieee") selects the direct-difference
# helpers, otherwise the GEMM-form helpers run with operand precision PREC. Every helper works on one component
# tile [BLOCK_K] and one D chunk [BLOCK_D] of a row block [BLOCK_N]; masked entries load as 0 and contribute 0.


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
def _half_quad(x, mu, w, p, a, DIRECT: tl.constexpr, PREC: tl.constexpr):
    """-1/2 sum_d w^2 (x - mu)^2 over one D chunk: [BLOCK_N, BLOCK_K]."""
    if DIRECT:
        y = w[None, :, :] * (x[:, None, :] - mu[None, :, :])
        out = -0.5 * tl.sum(y * y, axis=2)
    else:
        out = _mm(x, tl.trans(a), PREC) - 0.5 * _mm(x * x, tl.trans(p), PREC) - 0.5 * tl.sum(a * mu, axis=1)[None, :]
    return out


@triton.jit
def _g_dot_s(g, x, mu, p, a, DIRECT: tl.constexpr, PREC: tl.constexpr):
    """G . s_k = -sum_d G_d w_d^2 (x_d - mu_d) over one D chunk: [BLOCK_N, BLOCK_K]."""
    if DIRECT:
        out = -tl.sum(g[:, None, :] * (p[None, :, :] * (x[:, None, :] - mu[None, :, :])), axis=2)
    else:
        out = _mm(g, tl.trans(a), PREC) - _mm(g * x, tl.trans(p), PREC)
    return out


@triton.jit
def _weighted_s(c, x, mu, p, a, DIRECT: tl.constexpr, PREC: tl.constexpr):
    """sum_k c_k w_k^2 (mu_k - x) over one D chunk: [BLOCK_N, BLOCK_D] (c [BLOCK_N, BLOCK_K])."""
    if DIRECT:
        out = tl.sum(c[:, :, None] * (p[None, :, :] * (mu[None, :, :] - x[:, None, :])), axis=1)
    else:
        out = _mm(c, a, PREC) - x * _mm(c, p, PREC)
    return out


@triton.jit
def _weighted_p(c, p, DIRECT: tl.constexpr, PREC: tl.constexpr):
    """sum_k c_k w_k^2: [BLOCK_N, BLOCK_D]."""
    if DIRECT:
        out = tl.sum(c[:, :, None] * p[None, :, :], axis=1)
    else:
        out = _mm(c, p, PREC)
    return out


@triton.jit
def _moments(av, r, x, g, mu, HAS_G: tl.constexpr, DIRECT: tl.constexpr, PREC: tl.constexpr):
    """Per-component row sums of one row block and D chunk, [BLOCK_K, BLOCK_D] each. DIRECT: sum_n a (x - mu),
    sum_n a (x - mu)^2, sum_n r G, sum_n r G (x - mu); GEMM form: sum_n a x, sum_n a x^2, sum_n r G, sum_n r G x."""
    if DIRECT:
        dl = x[:, None, :] - mu[None, :, :]
        t = av[:, :, None] * dl
        q0 = tl.sum(t, axis=0)
        q1 = tl.sum(t * dl, axis=0)
        if HAS_G:
            rg = r[:, :, None] * g[:, None, :]
            q2 = tl.sum(rg, axis=0)
            q3 = tl.sum(rg * dl, axis=0)
        else:
            q2 = q0
            q3 = q0
    else:
        at = tl.trans(av)
        q0 = _mm(at, x, PREC)
        q1 = _mm(at, x * x, PREC)
        if HAS_G:
            rt = tl.trans(r)
            q2 = _mm(rt, g, PREC)
            q3 = _mm(rt, g * x, PREC)
        else:
            q2 = q0
            q3 = q0
    return q0, q1, q2, q3


@triton.jit
def _grad_chunk(av, r, x, g, mu, p, a, wsp, kd_mask, KD, HAS_G: tl.constexpr, DIRECT: tl.constexpr,
                PREC: tl.constexpr):
    """One component tile's contribution to grad_x over one D chunk (returned, [BLOCK_N, BLOCK_D]); its partial
    moments (:func:`_moments`) are stored at wsp, KD apart."""
    gxc = _weighted_s(av, x, mu, p, a, DIRECT, PREC)
    if HAS_G:
        gxc -= g * _weighted_p(r, p, DIRECT, PREC)
    q0, q1, q2, q3 = _moments(av, r, x, g, mu, HAS_G, DIRECT, PREC)
    tl.store(wsp, q0, mask=kd_mask)
    tl.store(wsp + KD, q1, mask=kd_mask)
    if HAS_G:
        tl.store(wsp + 2 * KD, q2, mask=kd_mask)
        tl.store(wsp + 3 * KD, q3, mask=kd_mask)
    return gxc


@triton.jit
def _tile_prob(X, G, MU, W, LOGC, x, gs, logp, rows64, rmask, ks, kmask, offs_d, D, HAS_G: tl.constexpr,
               ONE_CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
               DIRECT: tl.constexpr, PREC: tl.constexpr):
    """Backward passes 1 and 2: exp(logit - logp) of one row block and component tile (0 where masked) and
    G . s_k, [BLOCK_N, BLOCK_K] each (without HAS_G the second is a placeholder). ONE_CHUNK: x and gs hold the
    row block's D coordinates; otherwise the D chunks are loaded here."""
    k2d = ks[:, None] * D
    if ONE_CHUNK:
        mu, w, p, a = _load_comp(MU, W, k2d, offs_d[None, :], kmask[:, None] & (offs_d < D)[None, :])
        h = _half_quad(x, mu, w, p, a, DIRECT, PREC)
        if HAS_G:
            gdot = _g_dot_s(gs, x, mu, p, a, DIRECT, PREC)
        else:
            gdot = h
    else:
        h, gdot = _tile_terms(X, G, MU, W, rows64, rmask, k2d, kmask, offs_d, D, HAS_G, BLOCK_N, BLOCK_K, BLOCK_D,
                              DIRECT, PREC)
    logc = tl.load(LOGC + ks, mask=kmask, other=0.0).to(tl.float32)
    pk = tl.where(rmask[:, None] & kmask[None, :], tl.exp(h + logc[None, :] - logp[:, None]), 0.0)
    return pk, gdot


@triton.jit
def _tile_terms(X, G, MU, W, rows64, rmask, k2d, kmask, offs_d, D, HAS_G: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, DIRECT: tl.constexpr, PREC: tl.constexpr):
    """-1/2 |W_k (x - mu_k)|^2 and G . s_k of one row block and component tile over every D chunk."""
    h = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    gdot = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + offs_d
        dm = ds < D
        xd_m = rmask[:, None] & dm[None, :]
        xoff_c = rows64[:, None] * D + ds[None, :]
        xc = tl.load(X + xoff_c, mask=xd_m, other=0.0).to(tl.float32)
        muc, wc, pc, ac = _load_comp(MU, W, k2d, ds[None, :], kmask[:, None] & dm[None, :])
        h += _half_quad(xc, muc, wc, pc, ac, DIRECT, PREC)
        if HAS_G:
            gc = tl.load(G + xoff_c, mask=xd_m, other=0.0).to(tl.float32)
            gdot += _g_dot_s(gc, xc, muc, pc, ac, DIRECT, PREC)
    return h, gdot


@triton.jit
def _mixture_stats_fwd_kernel(
    X, MU, W, LOGC, LOGP, SCORE, RESP,
    N, K, D,
    WITH_SCORE: tl.constexpr, WITH_RESP: tl.constexpr, DIRECT: tl.constexpr, PREC: tl.constexpr,
    ONE_CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
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
        acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        kmask = ks < K
        k2d = ks[:, None] * D
        if ONE_CHUNK:
            mu, w, p, a = _load_comp(MU, W, k2d, offs_d[None, :], kmask[:, None] & dmask[None, :])
            h = _half_quad(x, mu, w, p, a, DIRECT, PREC)
        else:
            h, _ = _tile_terms(X, X, MU, W, rows64, rmask, k2d, kmask, offs_d, D, False, BLOCK_N, BLOCK_K, BLOCK_D,
                               DIRECT, PREC)
        logc = tl.load(LOGC + ks, mask=kmask, other=0.0).to(tl.float32)
        logit = tl.where(kmask[None, :], h + logc[None, :], float("-inf"))
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
                acc = acc * alpha[:, None] + _weighted_s(pr, x, mu, p, a, DIRECT, PREC)
            else:
                for d0 in range(0, D, BLOCK_D):
                    ds = d0 + offs_d
                    dm = ds < D
                    xd_m = rmask[:, None] & dm[None, :]
                    sp = SCORE + rows64[:, None] * D + ds[None, :]
                    xc = tl.load(X + rows64[:, None] * D + ds[None, :], mask=xd_m, other=0.0).to(tl.float32)
                    muc, wc, pc, ac = _load_comp(MU, W, k2d, ds[None, :], kmask[:, None] & dm[None, :])
                    sc = tl.load(sp, mask=xd_m, other=0.0)
                    tl.store(sp, sc * alpha[:, None] + _weighted_s(pr, xc, muc, pc, ac, DIRECT, PREC), mask=xd_m)
                tl.debug_barrier()

    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
    logp = m_safe + tl.log(l_i)
    tl.store(LOGP + rows64, logp, mask=rmask)
    inv_l = 1.0 / l_i
    if WITH_SCORE:
        if ONE_CHUNK:
            tl.store(SCORE + rows64[:, None] * D + offs_d[None, :], acc * inv_l[:, None], mask=xd_mask)
        else:
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + offs_d
                xd_m = rmask[:, None] & (ds < D)[None, :]
                sp = SCORE + rows64[:, None] * D + ds[None, :]
                tl.store(sp, tl.load(sp, mask=xd_m, other=0.0) * inv_l[:, None], mask=xd_m)
    if WITH_RESP:
        # r = exp(logit - m) / l, not exp(logit - logp): logp carries a rounding error of u |logp|
        tl.debug_barrier()
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + offs_k
            rk_m = rmask[:, None] & (ks < K)[None, :]
            rp = RESP + rows64[:, None] * K + ks[None, :]
            tl.store(rp, tl.exp(tl.load(rp, mask=rk_m, other=0.0) - m_i[:, None]) * inv_l[:, None], mask=rk_m)


@triton.jit
def _mixture_stats_bwd_kernel(
    X, MU, W, LOGC, LOGP, GL, G, H, GX, WS, SA,
    N, K, D, NB,
    NQ: tl.constexpr, HAS_G: tl.constexpr, HAS_H: tl.constexpr, DIRECT: tl.constexpr, PREC: tl.constexpr,
    ONE_CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # a[n, k] = r[n, k] * (g[n] + (G_n . s_k - G.S) + (H[n, k] - sum_j r_j H_j)); each difference is formed before
    # the sum, so that g keeps its accuracy where |G.s_k| >> |g| (far points)
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    X += b * N * D
    MU += b * K * D
    W += b * K * D
    LOGC += b * K
    LOGP += b * N
    GL += b * N
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
    g_lp = tl.load(GL + rows64, mask=rmask, other=0.0).to(tl.float32)
    if ONE_CHUNK:
        dmask = offs_d < D
        xd_mask = rmask[:, None] & dmask[None, :]
        xoff = rows64[:, None] * D + offs_d[None, :]
        x = tl.load(X + xoff, mask=xd_mask, other=0.0).to(tl.float32)
        if HAS_G:
            gs = tl.load(G + xoff, mask=xd_mask, other=0.0).to(tl.float32)
        else:
            gs = x  # unused
        gx = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    else:  # unused: the tiles load their own D chunks
        x = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        gs = x

    # pass 1: r = exp(logit - logp) / Z with Z = sum_k exp(logit - logp) (the saved logp is only the shift; the
    # normalisation cancels its rounding error u |logp|, which would otherwise enter every r), and the row terms
    # G.S = sum_k r_k G.s_k and sum_k r_k H_k from the same G.s_k as pass 2, so that they cancel exactly where one
    # component takes the whole row
    z = tl.zeros([BLOCK_N], tl.float32)
    gsum = tl.zeros([BLOCK_N], tl.float32)
    hsum = tl.zeros([BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        kmask = ks < K
        rk_mask = rmask[:, None] & kmask[None, :]
        pk, gdot = _tile_prob(X, G, MU, W, LOGC, x, gs, logp, rows64, rmask, ks, kmask, offs_d, D, HAS_G, ONE_CHUNK,
                              BLOCK_N, BLOCK_K, BLOCK_D, DIRECT, PREC)
        z += tl.sum(pk, axis=1)
        if HAS_G:
            gsum += tl.sum(pk * gdot, axis=1)
        if HAS_H:
            hsum += tl.sum(pk * tl.load(H + rows64[:, None] * K + ks[None, :], mask=rk_mask, other=0.0).to(tl.float32),
                           axis=1)
    zinv = tl.where(rmask, 1.0 / z, 0.0)
    gsum *= zinv
    hsum *= zinv

    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        kmask = ks < K
        k2d = ks[:, None] * D
        rk_mask = rmask[:, None] & kmask[None, :]
        pk, gdot = _tile_prob(X, G, MU, W, LOGC, x, gs, logp, rows64, rmask, ks, kmask, offs_d, D, HAS_G, ONE_CHUNK,
                              BLOCK_N, BLOCK_K, BLOCK_D, DIRECT, PREC)
        r = pk * zinv[:, None]
        coef = g_lp[:, None] + tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        if HAS_G:
            coef += gdot - gsum[:, None]
        if HAS_H:
            coef += tl.load(H + rows64[:, None] * K + ks[None, :], mask=rk_mask, other=0.0).to(tl.float32) - hsum[:, None]
        av = r * coef
        tl.store(SA + ks, tl.sum(av, axis=0), mask=kmask)
        if ONE_CHUNK:
            kd_mask = kmask[:, None] & dmask[None, :]
            mu, w, p, a = _load_comp(MU, W, k2d, offs_d[None, :], kd_mask)
            gx += _grad_chunk(av, r, x, gs, mu, p, a, WS + k2d + offs_d[None, :], kd_mask, K * D, HAS_G, DIRECT, PREC)
        else:
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + offs_d
                dm = ds < D
                xd_m = rmask[:, None] & dm[None, :]
                kd_m = kmask[:, None] & dm[None, :]
                xoff_c = rows64[:, None] * D + ds[None, :]
                xc = tl.load(X + xoff_c, mask=xd_m, other=0.0).to(tl.float32)
                muc, wc, pc, ac = _load_comp(MU, W, k2d, ds[None, :], kd_m)
                if HAS_G:
                    gc = tl.load(G + xoff_c, mask=xd_m, other=0.0).to(tl.float32)
                else:
                    gc = xc  # unused
                gxp = GX + xoff_c
                gxc = tl.load(gxp, mask=xd_m, other=0.0) + _grad_chunk(av, r, xc, gc, muc, pc, ac, WS + k2d + ds[None, :],
                                                                       kd_m, K * D, HAS_G, DIRECT, PREC)
                tl.store(gxp, gxc, mask=xd_m)
            tl.debug_barrier()

    if ONE_CHUNK:
        tl.store(GX + xoff, gx, mask=xd_mask)


# ----------------------------------------------------------------------------------------------------------
# launchers


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _modes(precision: str) -> dict:
    """The kernels' DIRECT and PREC constexprs of a precision mode."""
    code = _PRECISIONS[precision]
    return dict(DIRECT=precision == "ieee", PREC=3 if (code == 2 and _INTERPRET) else code)


def _config(D: int, K: int, device: torch.device, override: Optional[dict] = None, bwd: bool = False,
            precision: str = "ieee") -> dict:
    """Block sizes (static; chosen by D and precision). No torch.cuda queries, so CPU tensors work under the
    interpreter. Measured on an H100: fp32 ("fp32-gemm") dots (SIMT FMA) spill badly with 64x64 tiles (10x slower),
    hence smaller tiles for that mode. The direct path ("ieee") holds [BLOCK_N, BLOCK_K, BLOCK_D] products per tile;
    its tiles are a first guess, not yet measured on a GPU."""
    direct = precision == "ieee"
    if device.type != "cuda" or _INTERPRET:
        cfg = dict(_INTERPRET_CONFIG)
    elif direct:
        cfg = dict(BLOCK_N=32, BLOCK_K=4 if bwd else 8, BLOCK_D_MAX=32, num_warps=4, num_stages=2)
    elif precision == "fp32-gemm":
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
    cfg["BLOCK_K"] = max(1 if direct else 16, min(cfg["BLOCK_K"], _next_pow2(max(K, 1))))  # tl.dot needs >= 16
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
            for b0, b1 in batch_ranges(B):  # the mixtures lie in the grid's second dimension
                lpb = logp[b0:b1]
                launcher(_mixture_stats_fwd_kernel, x)[(triton.cdiv(N, cfg["BLOCK_N"]), b1 - b0)](
                    xc[b0:b1], mc[b0:b1], pc[b0:b1], lc[b0:b1], lpb, score[b0:b1] if with_score else lpb,
                    resp[b0:b1] if with_resp else lpb, N, K, D,
                    WITH_SCORE=bool(with_score), WITH_RESP=bool(with_resp), ONE_CHUNK=one_chunk,
                    **_modes(precision), **cfg)
    if dt != f32:
        logp, score, resp = logp.to(dt), score.to(dt), resp.to(dt)
    return logp, score, resp


def _present(t: Optional[Tensor]) -> bool:
    return t is not None and t.numel() > 0


def _mixture_stats_bwd(grad_logp: Optional[Tensor], grad_score: Optional[Tensor], grad_resp: Optional[Tensor],
                       x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, logp: Tensor, precision: str = "ieee",
                       *, config: Optional[dict] = None):
    """Plain launcher of the VJP (``None`` or empty cotangents count as zero). ``logp``: the forward output, the
    shift of the exponent. Returns (grad_x, grad_means, grad_prec, grad_logc)."""
    _check(x, means, prec, logc, precision, "mixture_stats_triton_backward")
    B, N, D = x.shape
    K = means.shape[1]
    f32 = torch.float32
    dev = x.device
    has_g, has_h = _present(grad_score), _present(grad_resp)
    gl = (grad_logp.to(f32) if _present(grad_logp) else torch.zeros((B, N), device=dev, dtype=f32)).contiguous()

    cfg = _config(D, K, dev, config, bwd=True, precision=precision)
    one_chunk = cfg.pop("ONE_CHUNK")
    nb = triton.cdiv(N, cfg["BLOCK_N"]) if N > 0 else 0
    nq = 4 if has_g else 2
    grad_x = (torch.empty if one_chunk else torch.zeros)((B, N, D), device=dev, dtype=f32)
    ws = torch.empty((B, nb, nq, K, D), device=dev, dtype=f32)
    sa = torch.empty((B, nb, K), device=dev, dtype=f32)
    if B * N > 0 and K > 0:
        gsc = grad_score.contiguous() if has_g else gl
        grc = grad_resp.contiguous() if has_h else gl
        ins = (x.contiguous(), means.contiguous(), prec.contiguous(), logc.contiguous(), logp.contiguous(), gl, gsc,
               grc, grad_x, ws, sa)
        for b0, b1 in batch_ranges(B):  # the mixtures lie in the grid's second dimension
            launcher(_mixture_stats_bwd_kernel, x)[(nb, b1 - b0)](
                *(t[b0:b1] for t in ins), N, K, D, nb,
                NQ=nq, HAS_G=has_g, HAS_H=has_h, ONE_CHUNK=one_chunk, **_modes(precision), **cfg)
    elif K == 0 or N == 0:
        grad_x.zero_()
    mu = means.to(f32)
    w = prec.to(f32)
    p = w * w
    q = ws.sum(1)  # [B, nq, K, D], summed over the row blocks in a fixed order
    s_a = sa.sum(1)
    if precision == "ieee":  # centred moments: sum a (x - mu), sum a (x - mu)^2, sum r G, sum r G (x - mu)
        gmu = q[:, 0]
        inner = q[:, 1]
        if has_g:
            gmu = gmu + q[:, 2]
            inner = inner + 2.0 * q[:, 3]
    else:  # raw moments: sum a x, sum a x^2, sum r G, sum r G x
        s_a3 = s_a.unsqueeze(-1)
        gmu = q[:, 0] - mu * s_a3
        inner = q[:, 1] - 2.0 * mu * q[:, 0] + mu * mu * s_a3
        if has_g:
            gmu = gmu + q[:, 2]
            inner = inner + 2.0 * (q[:, 3] - mu * q[:, 2])
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
                                      precision: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _mixture_stats_bwd(grad_logp, grad_score, grad_resp, x, means, prec, logc, logp, precision)


def _setup_context(ctx, inputs, output):
    x, means, prec, logc, with_score, with_resp, precision = inputs
    ctx.precision = precision
    ctx.save_for_backward(x, means, prec, logc, output[0])


def _backward(ctx, grad_logp, grad_score, grad_resp):
    x, means, prec, logc, logp = ctx.saved_tensors
    if grad_logp is None:
        grad_logp = torch.zeros_like(logp)
    if grad_score is not None and grad_score.numel() == 0:
        grad_score = None
    if grad_resp is not None and grad_resp.numel() == 0:
        grad_resp = None
    gx, gmu, gw, gc = torch.ops.gmmkernels.mixture_stats_triton_backward.default(
        grad_logp, grad_score, grad_resp, x, means, prec, logc, logp, ctx.precision)
    return gx, gmu, gw, gc, None, None, None


_mixture_stats_triton_op.register_autograd(_backward, setup_context=_setup_context)


def _setup_context_bwd(ctx, inputs, output):
    grad_logp, grad_score, grad_resp, x, means, prec, logc, logp, precision = inputs
    ctx.save_for_backward(grad_logp, grad_score, grad_resp, x, means, prec, logc)


def _backward_bwd(ctx, ggx, ggmu, ggw, ggc):
    """Second and higher derivatives: the VJP of the float32 reference of this backward (every precision mode; logp
    only shifts the exponent, so its gradient is zero)."""

    def bwd_ref(*args):
        return mixture_stats_backward_ref(*(None if t is None else t.float() for t in args), False)

    return (*_autograd.vjp(bwd_ref, ctx.saved_tensors, (ggx, ggmu, ggw, ggc)), None, None)


_mixture_stats_triton_backward_op.register_autograd(_backward_bwd, setup_context=_setup_context_bwd)


def mixture_stats_triton(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, with_score: bool = True,
                         with_resp: bool = False, precision: str = "ieee"):
    """Differentiable fused mixture statistics (diag). Returns (logp [B,N], score [B,N,D] or [0], resp [B,N,K] or [0])."""
    return torch.ops.gmmkernels.mixture_stats_triton.default(x, means, prec, logc, bool(with_score),
                                                            bool(with_resp), str(precision))
