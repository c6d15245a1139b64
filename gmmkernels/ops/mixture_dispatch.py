"""Public op of mixDDPM: the nearest-center dispatcher fused with the centred forward noising.

    mixture_dispatch(x0, centers, a, sigma, eps=None, *, backend="auto") -> Dispatch(x_t, assignment, dist2)
    nearest_center(x0, centers, *, backend="auto") -> assignment [N]

(Lloyd's k-means on this kernel is :func:`gmmkernels.kmeans`, in gmmkernels/fit/kmeans.py.)

Arguments of :func:`mixture_dispatch`:
  x0       [N, ...]  points (float16 / bfloat16 / float32 / float64); trailing dims are flattened to D
  centers  [K, ...]  with the same number of trailing elements D
  a, sigma Python floats, 0-d tensors or [N] tensors: per-row coefficients (a_t = sqrt(abar_t),
           sigma_t = sqrt(1 - abar_t) for the forward process of docs/methods.md (mixDDPM))
  eps      [N, ...] like x0, or None (no noise term)
  backend  "auto" | "reference" | "cpu" | "cuda" | "triton"   (gmmkernels/_dispatch.py: the rule of "auto")

Outputs: x_t shaped like x0; assignment [N] int64 = argmin_k |x0_n - c_k|^2 with the lowest index on ties
(identical in every backend for exact ties; near ties within float rounding may differ between backends,
see gmmkernels/reference/mixture_dispatch.py); dist2 [N] = |x0_n - c_j|^2. Non-finite distances never win: a row
with NaN or inf in x0 gets center 0 (and NaN/inf outputs); a center with NaN or inf is never chosen unless no
distance of the row is finite.

Differentiable (first order) in x0, centers, a, sigma and eps with the assignment held fixed; see
gmmkernels/reference/mixture_dispatch.py (dispatch_vjp) for the formulas. Half inputs are computed in float32 and cast back.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from .. import _backend, _dispatch
from .. import _validate as V
from ..reference import mixture_dispatch as _ref
from ..reference.mixture_dispatch import Dispatch, backward, setup_context

BACKENDS = ("auto",) + _dispatch.FAMILIES["mixture_dispatch"].names
Coef = Union[float, int, Tensor]


def dispatch_backends(device: Union[torch.device, str] = "cpu") -> list:
    """Backends that can run :func:`mixture_dispatch` on ``device`` here."""
    return _dispatch.available("mixture_dispatch", device)


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
    V.tensors(fn, [("x0", x0), ("centers", centers), ("eps", eps)])
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
    if eps is not None and eps.shape != x0.shape:
        raise ValueError(f"{fn}: argument 'eps' must have the shape of 'x0' {tuple(x0.shape)}, got {tuple(eps.shape)}")
    return D


def _run(fn, x0, centers, a, sigma, eps, backend) -> Dispatch:
    D = _check(fn, x0, centers, eps)
    N = x0.shape[0]
    out_dtype = x0.dtype
    cdt = _dispatch.compute_dtype(out_dtype)
    b = _dispatch.select(fn, "mixture_dispatch", backend, x0.device, cdt)
    av = _coef(fn, "a", a, N, x0)
    sv = _coef(fn, "sigma", sigma, N, x0)
    shape = x0.shape
    x2 = x0.reshape(N, D)
    c2 = centers.reshape(centers.shape[0], D)
    e2 = eps.reshape(N, D) if eps is not None else None
    if cdt != out_dtype:  # half inputs: every backend computes in float32
        x2, c2, av, sv = (t.to(cdt) for t in (x2, c2, av, sv))
        e2 = e2.to(cdt) if e2 is not None else None
    if b == "reference":
        xt, j, d2 = _ref.mixture_dispatch_ref(x2, c2, av, sv, e2)
        return Dispatch(xt.reshape(shape).to(out_dtype), j, d2.to(out_dtype))
    if b == "triton":
        from ..triton.mixture_dispatch import mixture_dispatch_triton

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


# ----------------------------------------------------------------------------------------------------------
# fake kernel and autograd of the native op (the autograd formula, shared with the Triton op, is in
# gmmkernels/reference/mixture_dispatch.py next to the gradient formulas it applies)


def _fake(x0, centers, a, sigma, eps):
    torch._check(x0.dim() == 2, lambda: "mixture_dispatch: x0 must be [N, D]")
    torch._check(centers.dim() == 2, lambda: "mixture_dispatch: centers must be [K, D]")
    N = x0.shape[0]
    return x0.new_empty(x0.shape), x0.new_empty((N,), dtype=torch.int64), x0.new_empty((N,))


if _backend.has_schema("mixture_dispatch"):
    torch.library.register_fake("gmmkernels::mixture_dispatch")(_fake)
    torch.library.register_autograd("gmmkernels::mixture_dispatch", backward, setup_context=setup_context)
