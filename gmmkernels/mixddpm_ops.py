"""Public op of mixDDPM: the nearest-center dispatcher fused with the centred forward noising, plus k-means.

    mixture_dispatch(x0, centers, a, sigma, eps=None, *, backend="auto") -> Dispatch(x_t, assignment, dist2)
    nearest_center(x0, centers, *, backend="auto") -> assignment [N]
    kmeans(x, k, *, iters=50, seed=0, backend="auto") -> KMeans(centers, assignment, inertia, iters)

Arguments of :func:`mixture_dispatch`:
  x0       [N, ...]  points (float16 / bfloat16 / float32 / float64); trailing dims are flattened to D
  centers  [K, ...]  with the same number of trailing elements D
  a, sigma Python floats, 0-d tensors or [N] tensors: per-row coefficients (a_t = sqrt(abar_t),
           sigma_t = sqrt(1 - abar_t) for the forward process of algorithms.md section 4.2)
  eps      [N, ...] like x0, or None (no noise term)
  backend  "auto" | "reference" | "cpu" | "cuda" | "triton"   (env GMMKERNELS_BACKEND overrides "auto")

Outputs: x_t shaped like x0; assignment [N] int64 = argmin_k |x0_n - c_k|^2 with the lowest index on ties
(identical in every backend for exact ties; near ties within float rounding may differ between backends,
see gmmkernels/mixddpm_reference.py); dist2 [N] = |x0_n - c_j|^2. Non-finite distances never win: a row
with NaN or inf in x0 gets center 0 (and NaN/inf outputs); a center with NaN or inf is never chosen unless no
distance of the row is finite.

Differentiable (first order) in x0, centers, a, sigma and eps with the assignment held fixed; see
gmmkernels/_registrations_mixddpm.py for the formulas. Half inputs are computed in float32 and cast back.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor

from . import _backend
from . import _registrations_mixddpm  # noqa: F401  (fake kernel + autograd of gmmkernels::mixture_dispatch)
from . import mixddpm_reference as _ref
from .mixddpm_reference import Dispatch

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")
Coef = Union[float, int, Tensor]


class KMeans(NamedTuple):
    centers: Tensor      # [k, D] (in x's trailing shape)
    assignment: Tensor   # [N] int64
    inertia: float       # mean squared distance to the assigned center
    iters: int


# Read once at import (the extension registers its kernels when loaded); a plain dict lookup also keeps the
# check out of torch.compile graphs.
_NATIVE = {key: _backend.has_kernel("mixture_dispatch", key) for key in ("CPU", "CUDA")}


def _has_native(key: str) -> bool:
    return _NATIVE[key]


def dispatch_backends(device: Union[torch.device, str] = "cpu") -> list:
    """Backends that can run :func:`mixture_dispatch` on ``device`` here."""
    device = torch.device(device)
    out = ["reference"]
    if device.type == "cpu" and _has_native("CPU"):
        out.append("cpu")
    if device.type == "cuda" and _has_native("CUDA"):
        out.append("cuda")
    if _backend.triton_usable(device):
        out.append("triton")
    return out


def _select(fn: str, backend: str, device: torch.device, dtype) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{fn}: argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get("GMMKERNELS_BACKEND", "auto") or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"{fn}: environment variable GMMKERNELS_BACKEND must be one of {BACKENDS}, got {backend!r}")
        if backend != "auto" and backend not in dispatch_backends(device):
            backend = "auto"  # the global override names a backend this device cannot run: fall back
    if backend == "auto":
        if device.type == "cuda" and _has_native("CUDA"):
            return "cuda"
        if device.type == "cuda" and _backend.HAS_TRITON and dtype != torch.float64:
            return "triton"
        if device.type == "cpu" and _has_native("CPU"):
            return "cpu"
        return "reference"
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"{fn}: backend='cpu' needs CPU tensors, got {device}")
        if not _has_native("CPU"):
            raise RuntimeError(f"{fn}: backend='cpu' needs the native extension with mixture_dispatch, which is not built")
    elif backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"{fn}: backend='cuda' needs CUDA tensors, got {device}")
        if not _has_native("CUDA"):
            raise RuntimeError(f"{fn}: backend='cuda' needs the extension built with CUDA (see `gmmkernels info`)")
    elif backend == "triton":
        if not _backend.HAS_TRITON:
            raise RuntimeError(f"{fn}: backend='triton' needs the triton package")
        if not _backend.triton_usable(device):
            raise ValueError(f"{fn}: backend='triton' runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1)")
        if dtype == torch.float64:
            raise TypeError(f"{fn}: backend='triton' computes in float32; use 'cpu'/'cuda'/'reference' for float64")
    return backend


def _coef(fn: str, name: str, v: Coef, N: int, like: Tensor) -> Tensor:
    if isinstance(v, bool) or not isinstance(v, (int, float, Tensor)):
        raise TypeError(f"{fn}: argument '{name}' must be a float or a tensor, got {type(v).__name__}")
    if isinstance(v, Tensor):
        if not v.is_floating_point():
            raise TypeError(f"{fn}: argument '{name}' must be a floating-point tensor, got {v.dtype}")
        if v.device != like.device:
            raise ValueError(f"{fn}: argument '{name}' is on {v.device} but 'x0' is on {like.device}")
        if v.dim() == 0 or (v.dim() == 1 and v.shape[0] == 1):
            return v.to(like.dtype).reshape(1).expand(N)
        if v.dim() == 1 and v.shape[0] == N:
            return v.to(like.dtype)
        raise ValueError(f"{fn}: argument '{name}' must be a scalar or have shape [N={N}], got {tuple(v.shape)}")
    return torch.full((N,), float(v), dtype=like.dtype, device=like.device)


def _check(fn: str, x0, centers, eps):
    for name, t in (("x0", x0), ("centers", centers)) + ((("eps", eps),) if eps is not None else ()):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: argument '{name}' must be a floating-point tensor, got {t.dtype}")
    if x0.dim() < 2:
        raise ValueError(f"{fn}: argument 'x0' must have shape [N, ...] with at least one data dimension, got {tuple(x0.shape)}")
    if centers.dim() < 2:
        raise ValueError(f"{fn}: argument 'centers' must have shape [K, ...], got {tuple(centers.shape)}")
    D = math.prod(x0.shape[1:])
    if D == 0:
        raise ValueError(f"{fn}: argument 'x0' has D=0 data dimensions")
    Dc = math.prod(centers.shape[1:])
    if Dc != D:
        raise ValueError(f"{fn}: argument 'centers' has D={Dc} values per center but 'x0' has D={D} per point")
    if centers.shape[0] == 0:
        raise ValueError(f"{fn}: argument 'centers' has K=0 centers")
    for name, t in (("centers", centers),) + ((("eps", eps),) if eps is not None else ()):
        if t.device != x0.device:
            raise ValueError(f"{fn}: argument '{name}' is on {t.device} but 'x0' is on {x0.device}")
        if t.dtype != x0.dtype:
            raise TypeError(f"{fn}: argument '{name}' has dtype {t.dtype} but 'x0' has {x0.dtype}; pass one dtype")
    if eps is not None and eps.shape != x0.shape:
        raise ValueError(f"{fn}: argument 'eps' must have the shape of 'x0' {tuple(x0.shape)}, got {tuple(eps.shape)}")
    return D


def _run(fn, x0, centers, a, sigma, eps, backend) -> Dispatch:
    D = _check(fn, x0, centers, eps)
    N = x0.shape[0]
    b = _select(fn, backend, x0.device, x0.dtype)
    av = _coef(fn, "a", a, N, x0)
    sv = _coef(fn, "sigma", sigma, N, x0)
    shape = x0.shape
    x2 = x0.reshape(N, D)
    c2 = centers.reshape(centers.shape[0], D)
    e2 = eps.reshape(N, D) if eps is not None else None
    if b == "reference":
        xt, j, d2 = _ref.mixture_dispatch_ref(x2, c2, av, sv, e2)
        return Dispatch(xt.reshape(shape), j, d2)
    out_dtype = x0.dtype
    if out_dtype in (torch.float16, torch.bfloat16):
        x2, c2, av, sv = (t.float() for t in (x2, c2, av, sv))
        e2 = e2.float() if e2 is not None else None
    if b == "triton":
        if x2.dtype != torch.float32:
            raise TypeError(f"{fn}: backend='triton' computes in float32")
        from .triton.mixture_dispatch import mixture_dispatch_triton

        xt, j, d2 = mixture_dispatch_triton(x2, c2, av, sv, e2)
    else:
        xt, j, d2 = torch.ops.gmmkernels.mixture_dispatch(x2, c2, av, sv, e2)
    return Dispatch(xt.reshape(shape).to(out_dtype), j, d2.to(out_dtype))


def mixture_dispatch(x0: Tensor, centers: Tensor, a: Coef, sigma: Coef, eps: Optional[Tensor] = None, *,
                     backend: str = "auto") -> Dispatch:
    """Nearest center j = argmin_k |x0 - c_k|^2 and x_t = a x0 + (1 - a) c_j + sigma eps in one fused pass.

    Returns ``Dispatch(x_t [N, ...], assignment [N] int64, dist2 [N])``; see the module docstring."""
    return _run("mixture_dispatch", x0, centers, a, sigma, eps, backend)


def nearest_center(x0: Tensor, centers: Tensor, *, backend: str = "auto") -> Tensor:
    """argmin_k |x0_n - c_k|^2 [N] int64 (lowest index on ties) with the fused kernel."""
    with torch.no_grad():
        return _run("nearest_center", x0, centers, 1.0, 0.0, None, backend).assignment


def kmeans(x: Tensor, k: int, *, iters: int = 50, seed: int = 0, tol: float = 0.0, backend: str = "auto",
           init: Optional[Tensor] = None) -> KMeans:
    """Lloyd's k-means on x [N, ...]: k-means++ seeding (``seed``) or ``init`` [k, ...], then alternating the fused
    dispatcher (assignment, GEMM-form distances) and a segmented mean (index_add). Empty clusters keep their
    previous center. Stops when no center moves by more than ``tol`` (0: exact fixed point) or after ``iters``."""
    fn = "kmeans"
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError(f"{fn}: argument 'x' must be a floating-point tensor [N, ...]")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{fn}: argument 'k' must be an int >= 1, got {k!r}")
    N = x.shape[0]
    if N < k:
        raise ValueError(f"{fn}: need at least k={k} points, got N={N}")
    xf = x.detach().reshape(N, -1)
    if init is not None:
        if init.shape[0] != k or init[0].numel() != xf.shape[1]:
            raise ValueError(f"{fn}: argument 'init' must have shape [k={k}, ...] with {xf.shape[1]} values per center")
        c = init.detach().reshape(k, -1).to(xf).clone()
    else:
        g = torch.Generator().manual_seed(seed)
        c = _ref._kmeanspp(xf.double().cpu(), k, g).to(xf)
    it = 0
    with torch.no_grad():
        for it in range(1, iters + 1):
            j = _run(fn, xf, c, 1.0, 0.0, None, backend).assignment
            s = torch.zeros_like(c).index_add_(0, j, xf)
            n = torch.bincount(j, minlength=k).to(c.dtype)
            c_new = torch.where(n[:, None] > 0, s / n.clamp_min(1)[:, None], c)
            shift = float((c_new - c).abs().max())
            c = c_new
            if shift <= tol:
                break
        d = _run(fn, xf, c, 1.0, 0.0, None, backend)
    return KMeans(c.reshape(k, *x.shape[1:]), d.assignment, float(d.dist2.double().mean()), it)
