"""Public op: one EM / VB iteration's E-step and sufficient statistics in one pass over the data.

    mixture_em_stats(x, logits, means, scale, cov_type="diag", *, with_resp=False, backend="auto") -> EMStats

Arguments as :func:`gmmkernels.mixture_stats` (x [..., N, D], logits [..., K], means [..., K, D], scale: diag
[..., K, D], spherical [..., K], full [..., K, D, D] Cholesky factors; leading dimensions broadcast). Returns
``EMStats(sum_log_prob [...], sum_r_log_r [...], nk [..., K], sx [..., K, D], sxx, responsibilities)`` with
sxx = sum_n r x^2 [..., K, D] (diag, spherical) or sum_n r x x^T [..., K, D, D] (full), and the responsibilities
[..., N, K] only when ``with_resp=True`` (else None). The native kernels keep the responsibilities of a tile of rows
in cache and never write N x K unless asked; they sum in a fixed order (no atomics), so results are reproducible.

EM's M-step and lower bound, VB's M-step and ELBO, and chunked or distributed fits (whose statistics are sums over
the data) are built on it in gmmkernels/fit/. Equations: docs/kernels.md (mixture_em_stats).

backend: "auto" | "reference" | "cpu" | "cuda" (gmmkernels/_dispatch.py). Dtypes: float32 and float64; float16 and
bfloat16 are computed in float32 and cast back. Not differentiable (statistics of an iteration; use mixture_stats
for gradients of log p).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _backend, _dispatch
from .. import _validate as V
from ..reference import mixture_em_stats as _ref
from .mixture_stats import _kernel_params

EMStats = _ref.EMStats


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
    out = torch.ops.gmmkernels.mixture_em_stats(x3, m3, p3, c2, full, with_resp)
    tails = [(), (), (K,), (K, D), (K, D, D) if full else (K, D), (N, K)]
    vals = [t.reshape((*batch, *tail)).to(out_dtype) for t, tail in zip(out[:5], tails)]
    resp = out[5].reshape(*batch, N, K).to(out_dtype) if with_resp else None
    return EMStats(*vals, resp)


def em_stats_kernel(x3: Tensor, means: Tensor, prec: Tensor, logc: Tensor, full: bool, with_resp: bool, backend: str):
    """The kernel-level call of the fitting loops (gmmkernels/fit/): x3 [B or 1, N, D], means [B, K, D], prec = W
    (diag [B, K, D], full lower-triangular [B, K, D, D]), logc [B, K], all of one dtype and device; no value checks.
    ``backend`` is a name :func:`gmmkernels._dispatch.select` already accepted ("reference" or native). Returns the
    tuple of the native op."""
    if backend == "reference":
        lp, rl, nk, sx, sxx, r = _ref.mixture_em_stats_kernel_ref(x3, means, prec, logc, full)
        return lp, rl, nk, sx, sxx, (r if with_resp else r.new_empty((0,)))
    return torch.ops.gmmkernels.mixture_em_stats(x3, means, prec, logc, full, with_resp)


# ----------------------------------------------------------------------------------------------------------
# fake kernel of the native op, and its refusal of gradients


if _backend.has_schema("mixture_em_stats"):

    @torch.library.register_fake("gmmkernels::mixture_em_stats")
    def _mixture_em_stats_fake(x, means, prec, logc, full, with_resp):
        torch._check(x.dim() == 3 and means.dim() == 3, lambda: "mixture_em_stats: x [B,N,D] and means [B,K,D] expected")
        B, K, D = means.shape
        N = x.shape[1]
        sxx = x.new_empty((B, K, D, D)) if full else x.new_empty((B, K, D))
        resp = x.new_empty((B, N, K)) if with_resp else x.new_empty((0,))
        return x.new_empty((B,)), x.new_empty((B,)), x.new_empty((B, K)), x.new_empty((B, K, D)), sxx, resp

    def _setup(ctx, inputs, output):
        pass

    def _backward(ctx, *grads):
        raise RuntimeError("gmmkernels.mixture_em_stats has no derivative: its outputs are the statistics of an EM / VB "
                           "iteration (use mixture_stats for gradients of log p, or backend='reference')")

    torch.library.register_autograd("gmmkernels::mixture_em_stats", _backward, setup_context=_setup)
