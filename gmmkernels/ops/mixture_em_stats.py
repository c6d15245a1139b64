"""Public ops: one EM / VB iteration's E-step and sufficient statistics in one pass over the data, and EM's M-step
from those statistics.

    mixture_em_stats(x, logits, means, scale, cov_type="diag", *, with_resp=False, backend="auto") -> EMStats
    mixture_em_mstep(nk, sx, sxx, cov_type="diag", *, reg_covar=1e-6, backend="auto") -> EMParams

Arguments as :func:`gmmkernels.mixture_stats` (x [..., N, D], logits [..., K], means [..., K, D], scale: diag
[..., K, D], spherical [..., K], full [..., K, D, D] Cholesky factors; leading dimensions broadcast). Returns
``EMStats(sum_log_prob [...], sum_r_log_r [...], nk [..., K], sx [..., K, D], sxx, responsibilities)`` with
sxx = sum_n r x^2 [..., K, D] (diag, spherical) or sum_n r x x^T [..., K, D, D] (full), and the responsibilities
[..., N, K] only when ``with_resp=True`` (else None). The native kernels keep the responsibilities of a tile of rows
in cache and never write N x K unless asked; they sum in a fixed order (no atomics), so results are reproducible.

EM's M-step and lower bound, VB's M-step and ELBO, and chunked or distributed fits (whose statistics are sums over
the data) are built on it in gmmkernels/fit/. Equations: docs/kernels.md (mixture_em_stats).

``mixture_em_mstep`` is the closed-form M-step of EM (scikit-learn's ``_estimate_gaussian_parameters`` and
precision Cholesky factors) for a batch of mixtures, with the kernel parameters of the next pass, in one native call
(one thread per component; a fit's host side is then a handful of calls per iteration instead of dozens of small
torch ops). Its ``ok`` flags mark components whose covariance is not positive definite; their other outputs are
unspecified, and the fitting loops redo such an iteration on the host path (which projects or raises).

backend: "auto" | "reference" | "cpu" | "cuda" | "triton" (gmmkernels/_dispatch.py). "triton" (``mixture_em_stats``
only; diag and spherical, any K, computed in float32; gmmkernels/triton/mixture_em_stats.py) runs the one-pass
design of the CPU kernel up to K = 64 and two kernels (log p, then the statistics per tile of components) above, on
CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1; "auto" does not choose it until it has been measured on a
GPU. Dtypes: float32 and float64; float16 and bfloat16 are computed in float32 and cast back. Not differentiable
(statistics of an iteration; use mixture_stats for gradients of log p).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from .. import _backend, _dispatch
from .. import _validate as V
from ..reference import mixture_em_stats as _ref
from .mixture_stats import _kernel_params

EMStats = _ref.EMStats
EMParams = _ref.EMParams
COV_KINDS = {"diag": 0, "spherical": 1, "full": 2}  # cov_kind of the native op

# The fitting loops call the native ops below the autograd layer: their statistics and parameters carry no gradient,
# and the Python autograd kernels of torch.library (which only refuse gradients here) cost more than the M-step.
_below_autograd = getattr(torch._C, "_AutoDispatchBelowAutograd", contextlib.nullcontext)


def mixture_em_stats(x: Tensor, logits: Tensor, means: Tensor, scale: Tensor, cov_type: str = "diag", *,
                     with_resp: bool = False, backend: str = "auto") -> EMStats:
    """Sum of log p, sum of r log r, N_k, sum r x and sum r x^2 (or r x x^T) of x under a mixture, in one pass."""
    fn = "mixture_em_stats"
    batch, K, D = V.mixture(fn, logits, means, scale, cov_type, x=x)
    with_resp = V.flag(fn, "with_resp", with_resp)
    b = _dispatch.select(fn, "mixture_em_stats", backend, x.device, x.dtype, cov_type=cov_type, D=D)
    N = x.shape[-2]
    out_dtype = x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        x, logits, means, scale = (t.float() for t in (x, logits, means, scale))
    if b == "reference":
        st = EMStats(*(t.to(out_dtype) for t in _ref.mixture_em_stats_ref(x, logits, means, scale, cov_type)))
        return st._replace(responsibilities=st.responsibilities if with_resp else None)
    prec, logc = _kernel_params(logits, scale, cov_type, K, D)
    B = math.prod(batch)
    full = cov_type == "full"
    x3 = x.reshape(1, N, D) if math.prod(x.shape[:-2]) == 1 else x.expand(*batch, N, D).reshape(B, N, D)
    m3 = means.expand(*batch, K, D).reshape(B, K, D)
    c2 = logc.expand(*batch, K).reshape(B, K)
    p3 = prec.expand(*batch, K, D, D).reshape(B, K, D, D) if full else prec.expand(*batch, K, D).reshape(B, K, D)
    if b == "triton":
        from ..triton.mixture_em_stats import mixture_em_stats_triton

        out = mixture_em_stats_triton(x3, m3, p3, c2, with_resp)
    else:
        out = torch.ops.gmmkernels.mixture_em_stats(x3, m3, p3, c2, full, with_resp)
    tails = [(), (), (K,), (K, D), (K, D, D) if full else (K, D), (N, K)]
    vals = [t.reshape((*batch, *tail)).to(out_dtype) for t, tail in zip(out[:5], tails)]
    resp = out[5].reshape(*batch, N, K).to(out_dtype) if with_resp else None
    return EMStats(*vals, resp)


def em_stats_kernel(x3: Tensor, means: Tensor, prec: Tensor, logc: Tensor, full: bool, with_resp: bool, backend: str):
    """The kernel-level call of the fitting loops (gmmkernels/fit/): x3 [B or 1, N, D], means [B, K, D], prec = W
    (diag [B, K, D], full lower-triangular [B, K, D, D]), logc [B, K], all of one dtype and device; no value checks.
    ``backend`` is a name :func:`gmmkernels._dispatch.select` already accepted ("reference", "triton" or native).
    Returns the tuple of the native op, which runs below the autograd layer (no gradient; not for torch.compile)."""
    if backend == "reference":
        lp, rl, nk, sx, sxx, r = _ref.mixture_em_stats_kernel_ref(x3, means, prec, logc, full)
        return lp, rl, nk, sx, sxx, (r if with_resp else r.new_empty((0,)))
    if backend == "triton":
        from ..triton.mixture_em_stats import _mixture_em_stats_fwd

        return _mixture_em_stats_fwd(x3, means, prec, logc, with_resp)
    with _below_autograd():
        return torch.ops.gmmkernels.mixture_em_stats.default(x3, means, prec, logc, full, with_resp)


def mixture_em_mstep(nk: Tensor, sx: Tensor, sxx: Tensor, cov_type: str = "diag", *, reg_covar: float = 1e-6,
                     backend: str = "auto") -> EMParams:
    """EM's M-step from the statistics of :func:`mixture_em_stats` of a batch of mixtures: nk [..., K], sx [..., K, D],
    sxx [..., K, D] (diag, spherical) or [..., K, D, D] (full). Returns ``EMParams(logits, means, scale, prec, logc,
    ok)``: the next mixture (its ``scale`` as :func:`mixture_stats` takes it), the kernel arguments of its pass
    (``prec`` = W, ``logc``; docs/kernels.md (mixture_em_stats)) and per-component ``ok`` flags (False where the
    covariance plus ``reg_covar`` is not positive definite, or, in float32 with full covariances, has no Cholesky
    factor before the regularisation; the other outputs of such a component are unspecified)."""
    fn = "mixture_em_mstep"
    V.choice(fn, "cov_type", cov_type, tuple(COV_KINDS))
    V.tensors(fn, [("nk", nk), ("sx", sx), ("sxx", sxx)])
    if nk.dim() < 1 or nk.shape[-1] < 1:
        raise ValueError(f"{fn}: argument 'nk' must have shape [..., K] with K >= 1, got {list(nk.shape)}")
    batch, K = nk.shape[:-1], nk.shape[-1]
    if sx.dim() < 1:
        raise ValueError(f"{fn}: argument 'sx' must have shape [..., K={K}, D], got {list(sx.shape)}")
    D = sx.shape[-1]
    V.shape(fn, "sx", sx, (*batch, K, D), "[..., K, D]")
    full = cov_type == "full"
    V.shape(fn, "sxx", sxx, (*batch, K, D, D) if full else (*batch, K, D), "[..., K, D, D]" if full else "[..., K, D]")
    if D < 1:
        raise ValueError(f"{fn}: argument 'sx' has D=0 dimensions")
    reg_covar = V.number(fn, "reg_covar", reg_covar, lo=0.0)
    for name, t in (("nk", nk), ("sx", sx), ("sxx", sxx)):
        V.finite(fn, name, t)
    b = _dispatch.select(fn, "mixture_em_stats", backend, nk.device, nk.dtype, op=fn, cov_type=cov_type, D=D)
    out_dtype = nk.dtype
    B = math.prod(batch)
    args = [t.to(torch.float32) if out_dtype in (torch.float16, torch.bfloat16) else t for t in (nk, sx, sxx)]
    args = [t.reshape(B, *t.shape[len(batch):]) for t in args]
    if b == "reference":
        out = _ref.mixture_em_mstep_ref(*args, cov_type, reg_covar)
    else:
        out = torch.ops.gmmkernels.mixture_em_mstep(*args, COV_KINDS[cov_type], reg_covar)
    return EMParams(*(t.reshape(*batch, *t.shape[1:]).to(out_dtype if t.is_floating_point() else t.dtype) for t in out))


def em_mstep_kernel(nk: Tensor, sx: Tensor, sxx: Tensor, cov_type: str, reg_covar: float, backend: str) -> EMParams:
    """The kernel-level M-step of the fitting loops: nk [B, K], sx [B, K, D], sxx [B, K, D] or [B, K, D, D], one
    dtype and device, no value checks; ``backend`` is "reference" or native (already selected). Not differentiable
    and not traceable by torch.compile (the native op runs below the autograd layer): the public op is."""
    if backend == "reference":
        return _ref.mixture_em_mstep_ref(nk, sx, sxx, cov_type, reg_covar)
    with _below_autograd():
        return EMParams(*torch.ops.gmmkernels.mixture_em_mstep.default(nk, sx, sxx, COV_KINDS[cov_type], float(reg_covar)))


def em_iterate_kernel(x3: Tensor, logits: Tensor, means: Tensor, scale: Tensor, kparams, lower: Tensor, cov_type: str,
                      reg_covar: float, tol: float, max_iter: int, n: float):
    """Up to ``max_iter`` EM iterations in one native call (``torch.ops.gmmkernels.mixture_em_iterate``) from the
    state (logits, means, scale, kernel parameters (prec, logc)) and the last lower bound ``lower`` [B]: stops early
    at the first iteration where a mixture converges (kept) or the M-step flags a component (not kept). Returns
    (logits, means, scale, (prec, logc), lower, converged, iterations kept, why it stopped: 0 max_iter,
    1 converged, 2 flagged). The kernel-level call of fit_em; below the autograd layer."""
    prec, logc = kparams
    with _below_autograd():
        lg, mu, sc, W, lc, lo, conv, counts = torch.ops.gmmkernels.mixture_em_iterate.default(
            x3, logits, means, scale, prec, logc, lower, COV_KINDS[cov_type], float(reg_covar), float(tol),
            int(max_iter), float(n))
    kept, why = counts.tolist()
    return lg, mu, sc, (W, lc), lo, conv, kept, why



# ----------------------------------------------------------------------------------------------------------
# fake kernels of the native ops, and their refusal of gradients


#: why mixture_em_stats (native or Triton) has no derivative
NO_DERIVATIVE_WHY = ("its outputs are the statistics of an EM / VB iteration (use mixture_stats for gradients of log p, "
                     "or backend='reference')")


def _no_derivative(op: str, why: str) -> None:
    """An autograd kernel for ``gmmkernels::<op>`` that raises on backward, saying ``why``."""

    def _backward(ctx, *grads):
        raise RuntimeError(f"gmmkernels.{op} has no derivative: {why}")

    torch.library.register_autograd(f"gmmkernels::{op}", _backward, setup_context=lambda ctx, inputs, output: None)


if _backend.has_schema("mixture_em_stats"):

    @torch.library.register_fake("gmmkernels::mixture_em_stats")
    def _mixture_em_stats_fake(x, means, prec, logc, full, with_resp):
        torch._check(x.dim() == 3 and means.dim() == 3, lambda: "mixture_em_stats: x [B,N,D] and means [B,K,D] expected")
        B, K, D = means.shape
        N = x.shape[1]
        sxx = x.new_empty((B, K, D, D)) if full else x.new_empty((B, K, D))
        resp = x.new_empty((B, N, K)) if with_resp else x.new_empty((0,))
        return x.new_empty((B,)), x.new_empty((B,)), x.new_empty((B, K)), x.new_empty((B, K, D)), sxx, resp

    _no_derivative("mixture_em_stats", NO_DERIVATIVE_WHY)


if _backend.has_schema("mixture_em_mstep"):

    @torch.library.register_fake("gmmkernels::mixture_em_mstep")
    def _mixture_em_mstep_fake(nk, sx, sxx, cov_kind, reg_covar):
        torch._check(nk.dim() == 2 and sx.dim() == 3, lambda: "mixture_em_mstep: nk [B,K] and sx [B,K,D] expected")
        B, K, D = sx.shape
        full = cov_kind == 2
        scale = nk.new_empty((B, K, D, D) if full else (B, K) if cov_kind == 1 else (B, K, D))
        prec = nk.new_empty((B, K, D, D) if full else (B, K, D))
        return (nk.new_empty((B, K)), nk.new_empty((B, K, D)), scale, prec, nk.new_empty((B, K)),
                nk.new_empty((B, K), dtype=torch.bool))

    _no_derivative("mixture_em_mstep", "it is the closed-form update of an EM iteration (use backend='reference' to "
                   "differentiate through it)")


if _backend.has_schema("mixture_em_iterate"):

    @torch.library.register_fake("gmmkernels::mixture_em_iterate")
    def _mixture_em_iterate_fake(x, logits, means, scale, prec, logc, lower, cov_kind, reg_covar, tol, max_iter, n):
        fresh = [t.new_empty(t.shape) for t in (logits, means, scale, prec, logc, lower)]  # contiguous copies
        return (*fresh, lower.new_empty(lower.shape, dtype=torch.bool), lower.new_empty((2,), dtype=torch.long))

    _no_derivative("mixture_em_iterate", "it runs the iterations of an EM fit")
