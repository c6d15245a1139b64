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
  precision "ieee" (exact fp32 arithmetic) | "tf32" | "bf16" (tensor-core GEMM form; Triton on CUDA only)

Leading dimensions broadcast between the arguments; each index of them is one independent mixture.
All ops are differentiable with respect to x, logits, means and scale (first order).
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from . import _backend
from . import reference as _ref

COV_TYPES = ("diag", "spherical", "full")
BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")
PRECISIONS = ("ieee", "tf32", "bf16")
_LOG_2PI = math.log(2.0 * math.pi)

_VALIDATE = True


class MixtureStats(NamedTuple):
    """Outputs of :func:`mixture_stats`; fields not asked for are ``None``."""

    log_prob: Tensor
    score: Optional[Tensor]
    responsibilities: Optional[Tensor]


def set_validation(enabled: bool) -> None:
    """Turn the value checks (positive finite scales, triangular factors, NaN weights) on or off.

    They read tensor values, which costs a device synchronisation per call on GPUs. Shape, dtype and
    device checks always run. Value checks are skipped inside torch.compile regions.
    """
    global _VALIDATE
    _VALIDATE = bool(enabled)


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run mixture ops on ``device`` in this installation."""
    device = torch.device(device)
    out = ["reference"]
    if device.type == "cpu" and _backend.has_kernel("mixture_stats", "CPU"):
        out.append("cpu")
    if device.type == "cuda" and _backend.has_kernel("mixture_stats", "CUDA"):
        out.append("cuda")
    if _backend.triton_usable(device):
        out.append("triton")
    return out


# ----------------------------------------------------------------------------------------------
# validation


def _check_inputs(fn: str, x, logits, means, scale, cov_type: str):
    for name, t in (("x", x), ("logits", logits), ("means", means), ("scale", scale)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: argument '{name}' must be a floating-point tensor, got {t.dtype}")
    if not isinstance(cov_type, str) or cov_type not in COV_TYPES:
        raise ValueError(f"{fn}: argument 'cov_type' must be one of {COV_TYPES}, got {cov_type!r}")
    for name, t in (("logits", logits), ("means", means), ("scale", scale)):
        if t.device != x.device:
            raise ValueError(f"{fn}: argument '{name}' is on {t.device} but 'x' is on {x.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"{fn}: argument '{name}' has dtype {t.dtype} but 'x' has {x.dtype}; pass one dtype")
    if x.dim() < 2:
        raise ValueError(f"{fn}: argument 'x' must have shape [..., N, D], got {tuple(x.shape)}")
    if means.dim() < 2:
        raise ValueError(f"{fn}: argument 'means' must have shape [..., K, D], got {tuple(means.shape)}")
    D, K = x.shape[-1], means.shape[-2]
    if D == 0:
        raise ValueError(f"{fn}: argument 'x' has D=0 dimensions")
    if means.shape[-1] != D:
        raise ValueError(f"{fn}: argument 'means' has D={means.shape[-1]} but 'x' has D={D}")
    if K == 0:
        raise ValueError(f"{fn}: argument 'means' has K=0 components")
    if logits.dim() < 1 or logits.shape[-1] != K:
        raise ValueError(f"{fn}: argument 'logits' must have shape [..., K={K}], got {tuple(logits.shape)}")
    want = {"diag": (K, D), "spherical": (K,), "full": (K, D, D)}[cov_type]
    if scale.dim() < len(want) or tuple(scale.shape[-len(want):]) != want:
        shape = {"diag": "[..., K, D]", "spherical": "[..., K]", "full": "[..., K, D, D]"}[cov_type]
        raise ValueError(
            f"{fn}: argument 'scale' for cov_type={cov_type!r} must have shape {shape} = [..., {', '.join(map(str, want))}],"
            f" got {tuple(scale.shape)}"
        )
    try:
        batch = torch.broadcast_shapes(x.shape[:-2], logits.shape[:-1], means.shape[:-2], scale.shape[: -len(want)])
    except RuntimeError as e:
        raise ValueError(f"{fn}: the leading (batch) dimensions of x, logits, means and scale do not broadcast: {e}") from None
    if _VALIDATE and not _compiling():
        _check_values(fn, logits, scale, cov_type)
    return batch, K, D


def _compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover
        return False


def _check_values(fn, logits, scale, cov_type):
    if logits.numel() and bool(torch.isnan(logits).any()):
        raise ValueError(f"{fn}: argument 'logits' contains NaN")
    if logits.numel() and bool((logits == float("inf")).any()):
        raise ValueError(f"{fn}: argument 'logits' contains +inf")
    if logits.numel() and bool(torch.isneginf(logits).all(-1).any()):
        raise ValueError(f"{fn}: argument 'logits' gives some mixture no component with positive weight (all -inf)")
    if cov_type == "full":
        diag = torch.diagonal(scale, dim1=-2, dim2=-1)
        if scale.numel() and bool(torch.triu(scale, 1).ne(0).any()):
            raise ValueError(f"{fn}: argument 'scale' for cov_type='full' must be lower-triangular (a Cholesky factor)")
        if diag.numel() and not bool(((diag > 0) & torch.isfinite(diag)).all()):
            raise ValueError(
                f"{fn}: argument 'scale' for cov_type='full' must have a positive finite diagonal (singular or invalid factor)"
            )
        if scale.numel() and not bool(torch.isfinite(scale).all()):
            raise ValueError(f"{fn}: argument 'scale' contains non-finite values")
    elif scale.numel() and not bool(((scale > 0) & torch.isfinite(scale)).all()):
        raise ValueError(f"{fn}: argument 'scale' must be positive and finite")


# ----------------------------------------------------------------------------------------------
# backend selection


def _select_backend(fn: str, backend: str, device: torch.device, cov_type: str, precision: str, dtype) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"{fn}: argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"{fn}: argument 'precision' must be one of {PRECISIONS}, got {precision!r}")
    if backend == "auto":
        backend = os.environ.get("GMMKERNELS_BACKEND", "auto") or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"{fn}: environment variable GMMKERNELS_BACKEND must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if precision != "ieee":
            backend = "triton"
        elif device.type == "cuda" and _backend.has_kernel("mixture_stats", "CUDA"):
            backend = "cuda"
        elif device.type == "cuda" and _backend.HAS_TRITON and cov_type != "full" and dtype != torch.float64:
            backend = "triton"
        elif device.type == "cpu" and _backend.has_kernel("mixture_stats", "CPU"):
            backend = "cpu"
        else:
            backend = "reference"
    if precision != "ieee" and backend != "triton":
        raise ValueError(
            f"{fn}: precision={precision!r} is a tensor-core mode of the 'triton' backend on CUDA; backend {backend!r} computes "
            "in exact arithmetic only (use precision='ieee')"
        )
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"{fn}: backend='cpu' needs CPU tensors, got {device}")
        if not _backend.has_kernel("mixture_stats", "CPU"):
            raise RuntimeError(f"{fn}: backend='cpu' needs the native extension, which is not built ({_backend.C_IMPORT_ERROR})")
    elif backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"{fn}: backend='cuda' needs CUDA tensors, got {device}")
        if not _backend.has_kernel("mixture_stats", "CUDA"):
            raise RuntimeError(f"{fn}: backend='cuda' needs the extension built with CUDA (see `gmmkernels info`)")
    elif backend == "triton":
        if not _backend.HAS_TRITON:
            raise RuntimeError(f"{fn}: backend='triton' needs the triton package")
        if not _backend.triton_usable(device):
            raise ValueError(f"{fn}: backend='triton' runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1)")
        if cov_type == "full":
            raise ValueError(f"{fn}: backend='triton' supports cov_type 'diag' and 'spherical'; use 'cuda' or 'cpu' for 'full'")
        if dtype == torch.float64:
            raise TypeError(f"{fn}: backend='triton' computes in float32; use backend 'cpu'/'cuda'/'reference' for float64")
    return backend


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
    batch, K, D = _check_inputs(fn, x, logits, means, scale, cov_type)
    b = _select_backend(fn, backend, x.device, cov_type, precision, x.dtype)
    N = x.shape[-2]
    if b == "reference":
        lp, sc, rs = _ref.mixture_stats_ref(x, logits, means, scale, cov_type)
        shape = tuple(batch)
        return MixtureStats(
            lp.expand(*shape, N),
            sc.expand(*shape, N, D) if with_score else None,
            rs.expand(*shape, N, K) if with_resp else None,
        )
    out_dtype = x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):  # kernels accumulate and store in float32
        x, logits, means, scale = (t.float() for t in (x, logits, means, scale))
    prec, logc = _kernel_params(logits, scale, cov_type, K, D)
    nb = len(batch)
    B = math.prod(batch)
    x3 = x.expand(*batch, N, D).reshape(B, N, D)
    m3 = means.expand(*batch, K, D).reshape(B, K, D)
    c2 = logc.expand(*batch, K).reshape(B, K)
    full = cov_type == "full"
    p3 = prec.expand(*batch, K, D, D).reshape(B, K, D, D) if full else prec.expand(*batch, K, D).reshape(B, K, D)
    if b == "triton":
        from .triton.mixture_stats import mixture_stats_triton

        lp, sc, rs = mixture_stats_triton(x3, m3, p3, c2, with_score, with_resp, precision)
    else:
        lp, sc, rs = torch.ops.gmmkernels.mixture_stats(x3, m3, p3, c2, full, with_score, with_resp)
    shape = tuple(batch[:nb])
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
