"""Triton backend of mixture_em_stats: one EM / VB iteration's E-step and sufficient statistics in one pass over
the data, diagonal covariances (spherical = diag with equal entries).

Semantics are those of ``reference.mixture_em_stats_kernel_ref(x, means, prec, logc, full=False)``::

    x [B or 1, N, D], means [B, K, D], prec = w [B, K, D] (inverse standard deviation per dimension), logc [B, K]
    logit[n, k] = logc_k - 1/2 sum_d (w_kd x_nd - w_kd mu_kd)^2,   r = softmax_k logit
    sum_log_prob = sum_n LSE_k logit,  sum_r_log_r = sum_n sum_k r log r,
    nk = sum_n r,  sx = sum_n r x,  sxx = sum_n r x^2

Algorithm (the one-pass design of the CPU kernel). The rows of each mixture are cut into S splits (grid (S, B)); a
program walks its split in blocks of BLOCK_N rows. With K <= TILE_K (``_em_stats_kernel``) a block holds all K
components in one tile (BLOCK_K = next power of two >= K):

  1. logits [BLOCK_N, BLOCK_K] by a loop over the D dimensions: y = w_d x_d - w_d mu_d, acc += y^2 (the direct
     difference of the native kernels, elementwise fp32; no GEMM expansion, whose cancellation grows with
     |x| |mu| / sigma^2: gmmkernels/triton/mixture_stats.py);
  2. the softmax of each row in registers: m, e = exp(logit - m), s = sum e, log p = m + log s, r = e / s and
     sum_k r log r = sum_k e (logit - m) / s - log s (e = 0 where logit = -inf);
  3. the statistics of the block: nk += sum_n r, and for each chunk of BLOCK_D dimensions sx += r^T x and
     sxx += r^T x^2 (``tl.dot`` with input_precision="ieee": fp32 products, no tensor cores).

The responsibilities never leave the program unless asked for. When D <= BLOCK_D the statistics stay in registers
over the whole split and are stored once; otherwise each chunk's sums are added to the program's own slab of the
partial-sum buffer (read-modify-write of rows no other program touches).

With K > TILE_K the components run in tiles (KTILE_K on CUDA) and two kernels share the work, the design of the
two-pass CUDA path (K > 32): ``_em_logp_kernel`` (grid: blocks of rows x mixtures) computes log p of every row, the
row maximum and the row sum of exp(logit - max) kept online over the tiles (the sum rescaled when the maximum
grows), and writes those N values; ``_em_tile_stats_kernel`` (grid: tiles x splits x mixtures) evaluates its tile's
logits again over the rows of its split, r = exp(logit - log p), and holds the tile's nk, sx, sxx (D <= 128 on
CUDA, in one chunk) and sum r log r in registers over the split. N x K is never written; the logits cost twice their
FMAs (6 NKD in all against 4 NKD), and each tile's program reads the rows of its split again (the tiles of a split
run side by side, so mostly from L2). A one-pass alternative that kept every tile's statistics in a per-program slab
of global memory was left out: at Flash-GMM's K = 1024, D = 128 it moves about 130 GB of slab reads and writes per
pass (derived: 2 x 4 bytes x K x 2D per block of 16 rows), more than the pass's arithmetic takes at the FP32 peak.

The host adds the S partial sums of each mixture in float64: no atomics, so results are reproducible run to run.

Dtypes: float32 (the public op computes float16 / bfloat16 in float32). float64 is refused with a TypeError (the
Triton path would compute it in float32). Not differentiable.

The block sizes are chosen from ptxas's register report alone: this kernel has run under the Triton interpreter
and been compiled for sm_90a, but not yet run or timed on a GPU.

Entry point: ``mixture_em_stats_triton(x, means, prec, logc, with_resp)`` -> the six outputs of the native op
``torch.ops.gmmkernels.mixture_em_stats`` (responsibilities [B, N, K] or an empty tensor); it calls
``torch.ops.gmmkernels.mixture_em_stats_triton``, a ``torch.library.triton_op``.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op

from ..ops.mixture_em_stats import NO_DERIVATIVE_WHY, _no_derivative
from ._utils import INTERPRET as _INTERPRET
from ._utils import batch_ranges, check_device, launcher
from .mixture_stats import _mm, _next_pow2

# K up to TILE_K: _em_stats_kernel, all components of a row in one register tile. Larger K: _em_logp_kernel, then
# _em_tile_stats_kernel over tiles of KTILE_K components (on CUDA).
TILE_K = 64
KTILE_K = 32
# The partial-sum buffer (splits x mixtures x slab) is kept under this size by taking fewer splits.
PART_BYTES_MAX = 1 << 30
# Under the interpreter: small blocks (speed) and BLOCK_D 16, so that D > 16 exercises the multi-chunk path.
_INTERPRET_CONFIG = dict(BLOCK_N=16, BLOCK_D_MAX=16, SPLITS=4, num_warps=1, num_stages=1)


@triton.jit
def _mixture_pointers(X, WM, W, LOGC, b, K, D, x_bstride):
    """X, WM, W, LOGC advanced to mixture b (int64)."""
    return X + b * x_bstride, WM + b * K * D, W + b * K * D, LOGC + b * K


@triton.jit
def _tile_logits(X, W, WM, LOGC, rows64, rmask, ks, kmask, K, D, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Logits [BLOCK_N, BLOCK_K] of the rows rows64 for the components ks, one dimension at a time: y = w_d x_d -
    (w mu)_d, acc += y^2 (W and WM laid out [D, K]: the components of one dimension are contiguous); -inf in the
    columns past K."""
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for d in range(0, D):
        xd = tl.load(X + rows64 * D + d, mask=rmask, other=0.0).to(tl.float32)
        wd = tl.load(W + d * K + ks, mask=kmask, other=0.0)
        wmd = tl.load(WM + d * K + ks, mask=kmask, other=0.0)
        y = xd[:, None] * wd[None, :] - wmd[None, :]
        acc += y * y
    logc = tl.load(LOGC + ks, mask=kmask, other=0.0).to(tl.float32)
    return tl.where(kmask[None, :], logc[None, :] - 0.5 * acc, float("-inf"))


@triton.jit
def _row_sum_x_log(e, log_e):
    """Row sums of e log e over a tile, with the term 0 where log e = -inf (so e = 0; the product would be NaN) and
    NaN kept: log e is clamped to the float32 lowest value."""
    return tl.sum(e * tl.maximum(log_e, -3.4028234663852886e38), axis=1)


@triton.jit
def _slab_stats(SX, SXX, X, rows64, rmask, rt, ks, kmask, D, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Adds r^T x and r^T x^2 of one block of rows (rt = r^T [BLOCK_K, BLOCK_N], components ks) to the program's
    slab, a chunk of BLOCK_D dimensions at a time (read-modify-write of sums no other program touches)."""
    offs_d = tl.arange(0, BLOCK_D)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + offs_d
        dmask = ds < D
        x = tl.load(X + rows64[:, None] * D + ds[None, :], mask=rmask[:, None] & dmask[None, :],
                    other=0.0).to(tl.float32)
        kd = ks[:, None] * D + ds[None, :]
        kd_mask = kmask[:, None] & dmask[None, :]
        tl.store(SX + kd, tl.load(SX + kd, mask=kd_mask, other=0.0) + _mm(rt, x, 0), mask=kd_mask)
        tl.store(SXX + kd, tl.load(SXX + kd, mask=kd_mask, other=0.0) + _mm(rt, x * x, 0), mask=kd_mask)


@triton.jit
def _block_stats(r, nk, sx, sxx, RESP, SX, SXX, X, rows64, rmask, ks, kmask, K, D, WITH_RESP: tl.constexpr,
                 ONE_CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """One block of rows' responsibilities r [BLOCK_N, BLOCK_K] (0 in the rows past N) for the components ks: stored
    when asked for, added to nk and, with D in one chunk, to sx and sxx (registers), else to the slab. Returns nk,
    sx, sxx."""
    if WITH_RESP:
        tl.store(RESP + rows64[:, None] * K + ks[None, :], r, mask=rmask[:, None] & kmask[None, :])
    nk += tl.sum(r, axis=0)
    rt = tl.trans(r)
    if ONE_CHUNK:
        offs_d = tl.arange(0, BLOCK_D)
        x = tl.load(X + rows64[:, None] * D + offs_d[None, :], mask=rmask[:, None] & (offs_d < D)[None, :],
                    other=0.0).to(tl.float32)
        sx += _mm(rt, x, 0)
        sxx += _mm(rt, x * x, 0)
    else:
        _slab_stats(SX, SXX, X, rows64, rmask, rt, ks, kmask, D, BLOCK_N, BLOCK_D)
        tl.debug_barrier()  # the next block reads these sums back, possibly from other threads
    return nk, sx, sxx


@triton.jit
def _store_stats(NK, SX, SXX, nk, sx, sxx, ks, kmask, D, ONE_CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
    """The register sums of a program: nk, and sx, sxx when D is in one chunk (else they are in the slab)."""
    tl.store(NK + ks, nk, mask=kmask)
    if ONE_CHUNK:
        offs_d = tl.arange(0, BLOCK_D)
        kd = ks[:, None] * D + offs_d[None, :]
        kd_mask = kmask[:, None] & (offs_d < D)[None, :]
        tl.store(SX + kd, sx, mask=kd_mask)
        tl.store(SXX + kd, sxx, mask=kd_mask)


@triton.jit
def _em_stats_kernel(
    X, WM, W, LOGC, PART, RESP,
    N, K, D, x_bstride, ROWS,
    WITH_RESP: tl.constexpr, ONE_CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """K <= BLOCK_K: all components of a row in one register tile."""
    b = tl.program_id(1).to(tl.int64)
    X, WM, W, LOGC = _mixture_pointers(X, WM, W, LOGC, b, K, D, x_bstride)
    RESP += b * N * K
    # the program's slab of partial sums: [lp, rl, nk [K], sx [K, D], sxx [K, D]]
    PART += (b * tl.num_programs(0) + tl.program_id(0)) * (2 + K + 2 * K * D)
    SX = PART + 2 + K
    SXX = SX + K * D

    ks = tl.arange(0, BLOCK_K)
    kmask = ks < K
    nk = tl.zeros([BLOCK_K], tl.float32)
    lp_acc = tl.zeros([BLOCK_N], tl.float32)
    rl_acc = tl.zeros([BLOCK_N], tl.float32)
    sx = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)  # used with ONE_CHUNK only
    sxx = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)

    start = tl.program_id(0) * ROWS
    for n0 in range(start, start + ROWS, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        rmask = rows < N
        rows64 = rows.to(tl.int64)
        # 1. logits
        logit = _tile_logits(X, W, WM, LOGC, rows64, rmask, ks, kmask, K, D, BLOCK_N, BLOCK_K)
        # 2. softmax of the rows
        m = tl.max(logit, axis=1)
        m_safe = tl.where(m == float("-inf"), 0.0, m)  # every logit -inf: log p = -inf, r = NaN
        lm = logit - m_safe[:, None]
        e = tl.exp(lm)
        s = tl.sum(e, axis=1)
        t = _row_sum_x_log(e, lm)
        log_s = tl.log(s)
        inv_s = 1.0 / s
        r = tl.where(rmask[:, None], e * inv_s[:, None], 0.0)
        lp_acc += tl.where(rmask, m_safe + log_s, 0.0)
        rl_acc += tl.where(rmask, t * inv_s - log_s, 0.0)
        # 3. statistics of the block
        nk, sx, sxx = _block_stats(r, nk, sx, sxx, RESP, SX, SXX, X, rows64, rmask, ks, kmask, K, D, WITH_RESP,
                                   ONE_CHUNK, BLOCK_N, BLOCK_D)

    tl.store(PART, tl.sum(lp_acc, axis=0))
    tl.store(PART + 1, tl.sum(rl_acc, axis=0))
    _store_stats(PART + 2, SX, SXX, nk, sx, sxx, ks, kmask, D, ONE_CHUNK, BLOCK_D)


@triton.jit
def _em_logp_kernel(X, WM, W, LOGC, LOGP, N, K, D, x_bstride, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """K in tiles, first kernel (grid: blocks of rows x mixtures): log p of each row, the log-sum-exp over the
    component tiles kept online (the row maximum m and s = sum_k exp(logit - m), s rescaled by exp(m_old - m_new)
    when the maximum grows)."""
    b = tl.program_id(1).to(tl.int64)
    X, WM, W, LOGC = _mixture_pointers(X, WM, W, LOGC, b, K, D, x_bstride)
    LOGP += b * N
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    m = tl.full([BLOCK_N], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        logit = _tile_logits(X, W, WM, LOGC, rows64, rmask, ks, ks < K, K, D, BLOCK_N, BLOCK_K)
        m_new = tl.maximum(m, tl.max(logit, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # no finite logit yet: s stays 0
        s = s * tl.exp(m - m_ref) + tl.sum(tl.exp(logit - m_ref[:, None]), axis=1)
        m = m_new
    # every logit -inf: log p = -inf (then r = NaN, as in the one-tile kernel)
    tl.store(LOGP + rows64, tl.where(m == float("-inf"), 0.0, m) + tl.log(s), mask=rmask)


@triton.jit
def _em_tile_stats_kernel(
    X, WM, W, LOGC, LOGP, PART, RL, RESP,
    N, K, D, x_bstride, ROWS,
    WITH_RESP: tl.constexpr, ONE_CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """K in tiles, second kernel (grid: component tiles x splits x mixtures): over the rows of its split, the
    program's BLOCK_K components get r = exp(logit - log p) (log p from _em_logp_kernel), sum r log r, nk and the
    statistics, held in registers over the split when D <= BLOCK_D (else added to the program's part of the slab of
    its split, which starts at zero). Writes PART[b, split] = [nk [K], sx [K, D], sxx [K, D]] for its components
    (the tiles of a split write disjoint parts) and RL[b, split, tile]."""
    kt = tl.program_id(0)
    split = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    X, WM, W, LOGC = _mixture_pointers(X, WM, W, LOGC, b, K, D, x_bstride)
    LOGP += b * N
    RESP += b * N * K
    slab = b * tl.num_programs(1) + split
    PART += slab * (K + 2 * K * D)
    SX = PART + K
    SXX = SX + K * D
    RL += slab * tl.num_programs(0) + kt

    ks = kt * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < K
    nk = tl.zeros([BLOCK_K], tl.float32)
    rl_acc = tl.zeros([BLOCK_N], tl.float32)
    sx = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)  # used with ONE_CHUNK only
    sxx = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    start = split * ROWS
    for n0 in range(start, start + ROWS, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        rmask = rows < N
        rows64 = rows.to(tl.int64)
        logp = tl.load(LOGP + rows64, mask=rmask, other=0.0)
        logit = _tile_logits(X, W, WM, LOGC, rows64, rmask, ks, kmask, K, D, BLOCK_N, BLOCK_K)
        log_r = logit - logp[:, None]
        r = tl.where(rmask[:, None], tl.exp(log_r), 0.0)
        rl_acc += _row_sum_x_log(r, log_r)
        nk, sx, sxx = _block_stats(r, nk, sx, sxx, RESP, SX, SXX, X, rows64, rmask, ks, kmask, K, D, WITH_RESP,
                                   ONE_CHUNK, BLOCK_N, BLOCK_D)

    tl.store(RL, tl.sum(rl_acc, axis=0))
    _store_stats(PART, SX, SXX, nk, sx, sxx, ks, kmask, D, ONE_CHUNK, BLOCK_D)


def cuda_blocks(K: int, D: int) -> dict:
    """Block sizes on CUDA, 8 warps. K <= TILE_K (one tile): BLOCK_K = next power of two >= K, at most 32 dimensions
    per chunk, 32 rows per block while BLOCK_K x BLOCK_D <= 512, else 16. K in tiles: tiles of KTILE_K components,
    D <= 128 in one chunk (else chunks of 32), 32 rows per block while KTILE_K x BLOCK_D <= 2048, else 16; the log p
    kernel 128 rows x KTILE_K components with 4 warps. These are the choices for which ptxas reports no spills for
    sm_90a with triton 3.6 (benchmarks/ptxas_report.py triton, checked by the tests). tl.dot needs every dimension
    >= 16."""
    if K <= TILE_K:
        bk, bd = max(16, _next_pow2(K)), max(16, min(_next_pow2(D), 32))
        return dict(BLOCK_N=32 if bk * bd <= 512 else 16, BLOCK_K=bk, BLOCK_D=bd, num_warps=8, num_stages=2)
    bd = max(16, _next_pow2(D)) if D <= 128 else 32
    return dict(BLOCK_N=32 if KTILE_K * bd <= 2048 else 16, BLOCK_K=KTILE_K, BLOCK_D=bd, num_warps=8, num_stages=2,
                LOGP_BLOCK_N=128, LOGP_WARPS=4)


def _config(N: int, K: int, D: int, B: int, device: torch.device, override: Optional[dict] = None) -> dict:
    """Block sizes and the number of splits per mixture (on CUDA about four programs per SM over all mixtures and
    component tiles, fewer where the partial sums would pass PART_BYTES_MAX). An override may set BLOCK_K_MAX /
    BLOCK_D_MAX (caps on the component tile and the dimension chunk) besides the keys of cuda_blocks and SPLITS."""
    if device.type != "cuda" or _INTERPRET:
        cfg = dict(_INTERPRET_CONFIG, BLOCK_K=max(16, min(_next_pow2(K), TILE_K)))
    else:
        cfg = cuda_blocks(K, D)
    cfg.update(override or {})
    if "BLOCK_K_MAX" in cfg:
        cfg["BLOCK_K"] = max(16, min(_next_pow2(K), cfg.pop("BLOCK_K_MAX")))
    if "BLOCK_D_MAX" in cfg:  # the interpreter's configuration, or an override: a cap on the chunk
        cfg["BLOCK_D"] = max(16, min(_next_pow2(D), cfg.pop("BLOCK_D_MAX")))
    cfg["KTILES"] = K > cfg["BLOCK_K"]
    cfg["ONE_CHUNK"] = D <= cfg["BLOCK_D"]
    cfg["tiles"] = triton.cdiv(K, cfg["BLOCK_K"]) if cfg["KTILES"] else 1
    if "SPLITS" not in cfg:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        cfg["SPLITS"] = max(1, 4 * sms // (max(B, 1) * cfg["tiles"]))
    blocks = triton.cdiv(max(N, 1), cfg["BLOCK_N"])
    slab_bytes = 4 * (2 + K + 2 * K * D) * max(B, 1)
    splits = max(1, min(cfg.pop("SPLITS"), blocks, PART_BYTES_MAX // slab_bytes))
    cfg["ROWS"] = triton.cdiv(blocks, splits) * cfg["BLOCK_N"]
    cfg["splits"] = triton.cdiv(max(N, 1), cfg["ROWS"])
    return cfg


def _check(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, fn: str) -> None:
    if x.dim() != 3 or means.dim() != 3 or prec.dim() != 3 or logc.dim() != 2:
        raise ValueError(
            f"{fn}: expected x [B or 1, N, D], means [B, K, D], prec [B, K, D] (diagonal), logc [B, K]; got "
            f"{tuple(x.shape)}, {tuple(means.shape)}, {tuple(prec.shape)}, {tuple(logc.shape)}")
    B, K, D = means.shape
    if x.shape[0] not in (1, B) or x.shape[2] != D or prec.shape != (B, K, D) or logc.shape != (B, K):
        raise ValueError(
            f"{fn}: shape mismatch: x {tuple(x.shape)}, means {tuple(means.shape)}, prec {tuple(prec.shape)}, "
            f"logc {tuple(logc.shape)}")
    for name, t in (("x", x), ("means", means), ("prec", prec), ("logc", logc)):
        if t.dtype != torch.float32:
            raise TypeError(f"{fn}: '{name}' must be float32 (Triton computes in fp32), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{fn}: all tensors must be on one device; '{name}' is on {t.device}, x on {x.device}")
    check_device(fn, x)


def _mixture_em_stats_fwd(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, with_resp: bool = False, *,
                          config: Optional[dict] = None):
    """Plain launcher. Returns (sum_log_prob [B], sum_r_log_r [B], nk [B, K], sx [B, K, D], sxx [B, K, D],
    resp [B, N, K] or [0])."""
    _check(x, means, prec, logc, "mixture_em_stats_triton")
    B, K, D = means.shape
    N = x.shape[1]
    dev = x.device
    cfg = _config(N, K, D, B, dev, config)
    splits, tiles, one_chunk, ktiles = cfg.pop("splits"), cfg.pop("tiles"), cfg.pop("ONE_CHUNK"), cfg.pop("KTILES")
    logp_cfg = dict(BLOCK_N=cfg.pop("LOGP_BLOCK_N", cfg["BLOCK_N"]), num_warps=cfg.pop("LOGP_WARPS", cfg["num_warps"]))
    # per split: [lp, rl] (one tile only), nk [K], sx [K, D], sxx [K, D]; the slab paths add to their sums: zeros
    head = 0 if ktiles else 2
    part = (torch.empty if one_chunk else torch.zeros)((B, splits, head + K + 2 * K * D), device=dev,
                                                       dtype=torch.float32)
    logp = torch.empty((B, N) if ktiles else (0,), device=dev, dtype=torch.float32)
    rl_part = torch.zeros((B, splits, tiles) if ktiles else (0,), device=dev, dtype=torch.float32)
    resp = torch.empty((B, N, K) if with_resp else (0,), device=dev, dtype=torch.float32)
    if B > 0 and N > 0 and K > 0:
        # the parameters by dimension, [B, D, K]: w and w mu (the product the kernels would form, in fp32)
        xc, lc = x.contiguous(), logc.contiguous()
        wt, wmt = prec.transpose(1, 2).contiguous(), (prec * means).transpose(1, 2).contiguous()
        x_bstride = 0 if xc.shape[0] == 1 else N * D
        rows = cfg.pop("ROWS")
        for b0, b1 in batch_ranges(B):  # the mixtures lie in the grid's last dimension
            ins = (xc if xc.shape[0] == 1 else xc[b0:b1], wmt[b0:b1], wt[b0:b1], lc[b0:b1])
            resp_arg = resp[b0:b1] if with_resp else part
            if ktiles:
                launcher(_em_logp_kernel, x)[(triton.cdiv(N, logp_cfg["BLOCK_N"]), b1 - b0)](
                    *ins, logp[b0:b1], N, K, D, x_bstride, BLOCK_K=cfg["BLOCK_K"], num_stages=cfg["num_stages"],
                    **logp_cfg)
                launcher(_em_tile_stats_kernel, x)[(tiles, splits, b1 - b0)](
                    *ins, logp[b0:b1], part[b0:b1], rl_part[b0:b1], resp_arg, N, K, D, x_bstride, rows,
                    WITH_RESP=bool(with_resp), ONE_CHUNK=one_chunk, **cfg)
            else:
                launcher(_em_stats_kernel, x)[(splits, b1 - b0)](
                    *ins, part[b0:b1], resp_arg, N, K, D, x_bstride, rows, WITH_RESP=bool(with_resp),
                    ONE_CHUNK=one_chunk, **cfg)
    else:
        part.zero_()
    tot = part.sum(1, dtype=torch.float64)  # [B, head + K + 2KD], the splits added in float64
    if ktiles:
        lp, rl = logp.sum(1, dtype=torch.float64), rl_part.sum((1, 2), dtype=torch.float64)
    else:
        lp, rl = tot[:, 0], tot[:, 1]
    nk = tot[:, head:head + K]
    sx = tot[:, head + K:head + K + K * D].reshape(B, K, D)
    sxx = tot[:, head + K + K * D:].reshape(B, K, D)
    f32 = torch.float32
    return lp.to(f32), rl.to(f32), nk.to(f32), sx.to(f32), sxx.to(f32), resp


@triton_op("gmmkernels::mixture_em_stats_triton", mutates_args=())
def _mixture_em_stats_triton_op(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor,
                                with_resp: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _mixture_em_stats_fwd(x, means, prec, logc, with_resp)


_no_derivative("mixture_em_stats_triton", NO_DERIVATIVE_WHY)


def mixture_em_stats_triton(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, with_resp: bool = False):
    """The six outputs of the native op ``mixture_em_stats`` (diag), computed by the Triton kernel."""
    return torch.ops.gmmkernels.mixture_em_stats_triton.default(x, means, prec, logc, bool(with_resp))
