"""Public fused mixture ops: log-density, score and responsibilities of (batched) Gaussian mixtures.

Every function takes the same arguments:

  x        [..., N, D]  points (float16 / bfloat16 / float32 / float64)
  logits   [..., K]     unnormalised log-weights (normalised inside with log_softmax; -inf drops a component)
  means    [..., K, D]
  scale    cov_type "diag":      per-dimension standard deviations [..., K, D]
           cov_type "spherical": one standard deviation per component [..., K]
           cov_type "full":      lower-triangular Cholesky factor of the covariance [..., K, D, D]
                                 (torch.distributions' ``scale_tril``)
  backend  "auto" | "reference" | "cpu" | "cuda" | "triton"   (env GMMKERNELS_BACKEND overrides "auto")
  precision "ieee" (fp32 arithmetic by direct differences, every backend) | "fp32-gemm" (fp32 GEMM form) |
            "tf32" | "bf16" (tensor-core GEMM form); the last three are modes of the Triton backend only

Leading dimensions broadcast between the arguments; each index of them is one independent mixture.
float16 / bfloat16 inputs are computed in float32 on every backend and returned in the input dtype.

Derivatives (docs/kernels.md (Contract)): every backend is differentiable with respect to x, logits, means and
scale, to any order. First derivatives run the fused backward kernels; second and higher derivatives run the
differentiable reference of the backward kernel (materialising N x K x D). Under torch.func transforms (grad,
jacrev, jacfwd, hessian, vmap) ``backend="auto"`` runs the reference backend, since the fused ops' autograd is a
torch.library registration that those transforms do not support; naming a fused backend there raises.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _autograd, _backend, _dispatch
from .. import _validate as V
from ..reference import mixture_stats as _ref

COV_TYPES = V.COV_TYPES
BACKENDS = ("auto",) + _dispatch.FAMILIES["mixture_stats"].names
PRECISIONS = ("ieee", "fp32-gemm", "tf32", "bf16")
_LOG_2PI = math.log(2.0 * math.pi)


MixtureStats = _ref.MixtureStats  # outputs of mixture_stats; fields not asked for are None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run mixture ops on ``device`` in this installation (priority order of ``"auto"``)."""
    return _dispatch.available("mixture_stats", device)


def _kernel_params(logits: Tensor, scale: Tensor, cov_type: str, K: int, D: int):
    """(prec, logc) of the kernel-level op: logit_k = logc_k - |W_k (x - mu_k)|^2 / 2. Differentiable torch ops."""
    logw = torch.log_softmax(logits, dim=-1)
    if cov_type == "diag":
        prec = scale.reciprocal()
        logc = logw - torch.log(scale).sum(-1) - 0.5 * D * _LOG_2PI
    elif cov_type == "spherical":
        prec = scale.reciprocal().unsqueeze(-1).expand(*scale.shape, D)
        logc = logw - D * torch.log(scale) - 0.5 * D * _LOG_2PI
    else:
        eye = torch.eye(D, dtype=scale.dtype, device=scale.device).expand_as(scale)
        prec = torch.linalg.solve_triangular(scale, eye, upper=False)
        logc = logw - torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1) - 0.5 * D * _LOG_2PI
    return prec, logc


def mixture_stats(
    x: Tensor,
    logits: Tensor,
    means: Tensor,
    scale: Tensor,
    cov_type: str = "diag",
    *,
    backend: str = "auto",
    precision: str = "ieee",
    with_score: bool = True,
    with_resp: bool = False,
) -> MixtureStats:
    """log p(x), and optionally the score grad_x log p(x) and the responsibilities, in one fused pass.

    Returns ``MixtureStats(log_prob [..., N], score [..., N, D] | None, responsibilities [..., N, K] | None)``.
    The fused kernels never materialise the N x K x D intermediate; the responsibilities (N x K) are only
    written when ``with_resp=True``.
    """
    fn = "mixture_stats"
    return _mixture_stats(fn, x, logits, means, scale, cov_type, backend, precision, with_score, with_resp)


def _mixture_stats(fn, x, logits, means, scale, cov_type, backend, precision, with_score, with_resp) -> MixtureStats:
    batch, K, D = V.mixture(fn, logits, means, scale, cov_type, x=x)
    V.choice(fn, "precision", precision, PRECISIONS)
    with_score = V.flag(fn, "with_score", with_score)
    with_resp = V.flag(fn, "with_resp", with_resp)
    out_dtype = x.dtype
    cdt = _dispatch.compute_dtype(out_dtype)
    b = _dispatch.select(fn, "mixture_stats", backend, x.device, cdt, cov_type=cov_type, precision=precision,
                         transforms=_autograd.transforms_active())
    N = x.shape[-2]
    shape = tuple(batch)
    if cdt != out_dtype:  # half inputs: every backend computes in float32
        x, logits, means, scale = (t.to(cdt) for t in (x, logits, means, scale))
    if b == "reference":
        lp, sc, rs = _ref.mixture_stats_ref(x, logits, means, scale, cov_type)
        return MixtureStats(
            lp.expand(*shape, N).to(out_dtype),
            sc.expand(*shape, N, D).to(out_dtype) if with_score else None,
            rs.expand(*shape, N, K).to(out_dtype) if with_resp else None,
        )
    prec, logc = _kernel_params(logits, scale, cov_type, K, D)
    B = math.prod(batch)
    x3 = x.expand(*batch, N, D).reshape(B, N, D)
    m3 = means.expand(*batch, K, D).reshape(B, K, D)
    c2 = logc.expand(*batch, K).reshape(B, K)
    full = cov_type == "full"
    p3 = prec.expand(*batch, K, D, D).reshape(B, K, D, D) if full else prec.expand(*batch, K, D).reshape(B, K, D)
    if b == "triton":
        from ..triton.mixture_stats import mixture_stats_triton

        lp, sc, rs = mixture_stats_triton(x3, m3, p3, c2, with_score, with_resp, precision)
    else:
        lp, sc, rs = torch.ops.gmmkernels.mixture_stats(x3, m3, p3, c2, full, with_score, with_resp)
    lp = lp.reshape(*shape, N).to(out_dtype)
    sc = sc.reshape(*shape, N, D).to(out_dtype) if with_score else None
    rs = rs.reshape(*shape, N, K).to(out_dtype) if with_resp else None
    return MixtureStats(lp, sc, rs)


def mixture_log_prob(x, logits, means, scale, cov_type="diag", *, backend="auto", precision="ieee") -> Tensor:
    """log p(x) [..., N] of a Gaussian mixture (see the module docstring for the arguments)."""
    return _mixture_stats("mixture_log_prob", x, logits, means, scale, cov_type, backend, precision, False, False).log_prob


def mixture_score(x, logits, means, scale, cov_type="diag", *, backend="auto", precision="ieee") -> Tensor:
    """Score grad_x log p(x) [..., N, D] of a Gaussian mixture."""
    return _mixture_stats("mixture_score", x, logits, means, scale, cov_type, backend, precision, True, False).score


def mixture_responsibilities(x, logits, means, scale, cov_type="diag", *, backend="auto", precision="ieee") -> Tensor:
    """Posterior component probabilities p(k | x) [..., N, K] of a Gaussian mixture."""
    return _mixture_stats(
        "mixture_responsibilities", x, logits, means, scale, cov_type, backend, precision, False, True
    ).responsibilities


# ----------------------------------------------------------------------------------------------------------
# fake kernels and autograd of the native op (torch.ops.gmmkernels.mixture_stats / mixture_stats_backward)


if _backend.has_schema("mixture_stats"):

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
        # the kernels return contiguous gradients whatever the strides of the inputs (prec of a full covariance
        # comes column-major out of solve_triangular)
        return x.new_empty(x.shape), means.new_empty(means.shape), prec.new_empty(prec.shape), logc.new_empty(logc.shape)

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

    # Second and higher derivatives: the VJP of the differentiable reference of the backward kernel. The saved logp
    # only shifts the kernels' exponent (r = exp(logit - logp) / sum_j exp(logit_j - logp)), so the value does not
    # depend on it: its gradient is zero.

    def _setup_bwd(ctx, inputs, output):
        grad_logp, grad_score, grad_resp, x, means, prec, logc, logp, full = inputs
        ctx.full = full
        ctx.save_for_backward(grad_logp, grad_score, grad_resp, x, means, prec, logc)

    def _backward_bwd(ctx, ggx, ggm, ggp, ggc):
        g, G, H, x, means, prec, logc = ctx.saved_tensors
        full = ctx.full
        out = _autograd.vjp(
            lambda g_, G_, H_, x_, m_, p_, c_: _ref.mixture_stats_backward_ref(g_, G_, H_, x_, m_, p_, c_, full),
            (g, G, H, x, means, prec, logc), (ggx, ggm, ggp, ggc))
        return (*out, None, None)

    torch.library.register_autograd("gmmkernels::mixture_stats_backward", _backward_bwd, setup_context=_setup_bwd)
