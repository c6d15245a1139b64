"""GMS (Gaussian Mixture Solvers, Guo et al., NeurIPS 2023, arXiv 2311.00941): the per-element two-component fit and
the fused sampling step.

GMS replaces the Gaussian reverse kernel p(x_s | x_t) of a diffusion sampler by a two-component mixture per element,

    x_s ~ w N(mu1, v) + (1 - w) N(mu2, v)          (w fixed, 1/3 in the paper; one variance shared by both)

whose three parameters (mu1, mu2, v) match the first three moments of x_s | x_t predicted by noise-network heads.

Public ops (no autograd: these are sampling-time ops; calling backward through them raises an error):

  gms_fit(mean, var, third_moment, weight=1/3, method="closed" | "adan", iters=70, lr=0.06, *, var_floor=0.1,
          n_el=None, backend="auto") -> GMSFit(mu1, mu2, var)
  gms_step(x_t, e1, e2, e3, coeffs, *, method="closed" | "adan" | "gaussian", weight=1/3, per_image=True, seed=None,
           offset=0, generator=None, ..., return_params=False, backend="auto") -> x_s  (or GMSStep with the fit)
  GMSCoeffs(a_t, sigma_t, A, B, lam2), GMSCoeffs.from_alphas_cumprod(abar_t, abar_s)

Backends: "auto" | "reference" (pure PyTorch, gmmkernels/reference/gms_fit.py) | "cpu" | "cuda" | "triton"
(``gms_fit`` only; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1). "auto" picks the native kernel of the
device, then Triton, then the reference; see gmmkernels/_dispatch.py for the rule of GMMKERNELS_BACKEND.
Equations: docs/kernels.md (gms_fit) and (gms_step).
Dtypes: float32 and float64 natively; float16 / bfloat16 are computed in float32 and cast back.
Any shape, elementwise; inputs of ``gms_fit`` broadcast against each other; non-contiguous inputs are fine.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import _backend, _dispatch
from .. import _validate as V
from ..reference import gms_fit as _ref

BACKENDS = ("auto",) + _dispatch.FAMILIES["gms_fit"].names
FIT_METHODS = {"closed": 0, "adan": 1}
STEP_METHODS = {"closed": 0, "adan": 1, "gaussian": 2}
_HALF_DTYPES = (torch.float16, torch.bfloat16)


class GMSFit(NamedTuple):
    """Fitted mixture w N(mu1, var) + (1 - w) N(mu2, var), elementwise."""

    mu1: Tensor
    mu2: Tensor
    var: Tensor


class GMSStep(NamedTuple):
    """Output of :func:`gms_step` with ``return_params=True``."""

    x: Tensor
    mu1: Tensor
    mu2: Tensor
    var: Tensor


class GMSCoeffs(NamedTuple):
    """Scalar coefficients of one GMS transition t -> s (docs/kernels.md (gms_step), VP / DDPM notation).

    a_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t); the DDPM posterior q(x_s | x_t, x_0) = N(A x_t + B x_0, lam2).
    """

    a_t: float
    sigma_t: float
    A: float
    B: float
    lam2: float

    @classmethod
    def from_alphas_cumprod(cls, abar_t: float, abar_s: float) -> "GMSCoeffs":
        """Coefficients from the cumulative products abar_t < abar_s (s < t):
        alpha_{t|s} = a_t / a_s, beta_{t|s} = sigma_t^2 - alpha_{t|s}^2 sigma_s^2, A = alpha_{t|s} sigma_s^2 / sigma_t^2,
        B = a_s beta_{t|s} / sigma_t^2, lam2 = sigma_s^2 beta_{t|s} / sigma_t^2."""
        abar_t, abar_s = float(abar_t), float(abar_s)
        if not (0.0 < abar_t < 1.0 and 0.0 < abar_s <= 1.0):
            raise ValueError(f"GMSCoeffs.from_alphas_cumprod: need 0 < abar_t < 1 and 0 < abar_s <= 1, got {abar_t}, {abar_s}")
        a_t, a_s = math.sqrt(abar_t), math.sqrt(abar_s)
        s2t, s2s = 1.0 - abar_t, 1.0 - abar_s
        a_ts = a_t / a_s
        b_ts = s2t - a_ts * a_ts * s2s
        return cls(a_t, math.sqrt(s2t), a_ts * s2s / s2t, a_s * b_ts / s2t, s2s * b_ts / s2t)


# ----------------------------------------------------------------------------------------------------------
# validation and backend choice


def _check_scalars(fn: str, weight, iters, lr, var_floor, n_el):
    V.number(fn, "weight", weight, lo=0.0, hi=1.0, lo_open=True, hi_open=True, what="a number in (0, 1)")
    V.integer(fn, "iters", iters, lo=0, hi=1 << 20, what="an int in [0, 2^20]")
    V.number(fn, "lr", lr, lo=0.0, lo_open=True, what="a positive finite number")
    V.number(fn, "var_floor", var_floor, lo=0.0, hi=1.0, what="a number in [0, 1]")
    if n_el is not None:
        V.integer(fn, "n_el", n_el, lo=1, what="None or a positive int")


def available_gms_backends(device: torch.device | str = "cpu", op: str = "gms_fit") -> list[str]:
    """Backends that can run ``op`` ("gms_fit" or "gms_step") on ``device`` in this installation."""
    V.choice("available_gms_backends", "op", op, ("gms_fit", "gms_step"))
    return _dispatch.available("gms_fit", device, op)


def _compute_dtype(dtype):
    return torch.float32 if dtype in _HALF_DTYPES else dtype


# ----------------------------------------------------------------------------------------------------------
# gms_fit


def gms_fit(mean: Tensor, var: Tensor, third_moment: Tensor, weight: float = 1.0 / 3.0, method: str = "closed",
            iters: int = 70, lr: float = 0.06, *, var_floor: float = 0.1, n_el: Optional[int] = None,
            backend: str = "auto") -> GMSFit:
    """Fit w N(mu1, v) + (1 - w) N(mu2, v) to E[x] = mean, Var[x] = var, E[x^3] = third_moment, per element.

    Args:
      mean, var, third_moment: tensors of one floating dtype and device that broadcast together (any shape).
        ``third_moment`` is the RAW third moment E[x^3] (as in GMS), not the central one.
      weight: w in (0, 1), the weight of component 1 (GMS fixes it to 1/3).
      method:
        "closed" (default): the exact solution of the three moment equations. With m3c = M3 - 3 M1 V - M1^3 (the third
          central moment), delta = mu1 - mu2 = cbrt(m3c / (w(1-w)(1-2w))), mu1 = M1 + (1-w) delta,
          mu2 = M1 - w delta, v = V - w(1-w) delta^2 (Pearson-style method of moments for a fixed weight and a
          shared variance: the mixture's cumulants are k2 = v + w(1-w) delta^2, k3 = w(1-w)(1-2w) delta^3).
          Fallback when the exact v < var_floor * V (too much skew for the variance; with var_floor = 0 this is
          exactly the infeasible case v < 0): v = var_floor * V and delta keeps its sign but shrinks to
          |delta| = sqrt((V - v) / (w(1-w))), so mean and variance still match exactly and the skew is the largest
          reachable. The default var_floor = 0.1 is the lower clamp the official solver puts on v / V.
          w = 1/2: the mixture is symmetric (third central moment 0 for every delta), so delta = 0 and v = V when
          m3c = 0 and otherwise the limit w -> 1/2 of the rule above (v = var_floor * V, delta = sign(m3c) *
          sqrt((1 - var_floor) V / w(1-w))).
          V = 0 gives mu1 = mu2 = mean, v = 0; V < 0 is treated as 0; a NaN third moment or a non-finite mean or
          variance gives NaN in all three outputs of that element only; third_moment = +-inf is huge skew (fallback).
          Computed in float64 on CPU/CUDA (float32 in the Triton kernel), about 20 flops an element.
        "adan": the official GMS solver (``sample.py::solve_gmm`` of Guohanzhong/GMS) reproduced in registers, one
          launch: theta = (mu1, mu2, beta) from (M1, M1 - 1e-3, 0.998), v = V clamp(beta, 0.1, 1.2), loss
          J = (1/n_el) sum over elements of g0^2 + g1^2 + g2^2 (raw-moment residuals, identity weighting),
          ``iters`` Adan steps (lr, betas (0.9, 0.92, 0.92), eps 1e-8, no weight decay). The 1/n_el scale matters
          because Adan's eps is not negligible next to such small gradients; n_el defaults to the number of
          elements of this call (the official code's mean over the whole batch). Returns v = V clamp(beta, 0.1, 1.2).
          Computed in the input dtype, as the official float32 code. NaN propagates per element only.
      iters, lr: Adan iterations and learning rate ("adan" only; the official 70 and 0.06).
      var_floor: lower bound of v / V for "closed", in [0, 1].
      n_el: element count of the 1/n_el gradient scale for "adan" (set it when fitting a batch in chunks).
      backend: see the module docstring.
    Returns:
      GMSFit(mu1, mu2, var), tensors of the broadcast shape and the input dtype.
    No autograd (a sampling-time op).
    """
    fn = "gms_fit"
    V.tensors(fn, [("mean", mean), ("var", var), ("third_moment", third_moment)])
    V.choice(fn, "method", method, FIT_METHODS)
    _check_scalars(fn, weight, iters, lr, var_floor, n_el)
    try:
        mean, var, third_moment = torch.broadcast_tensors(mean, var, third_moment)
    except RuntimeError as e:
        raise ValueError(f"{fn}: the shapes of 'mean' {tuple(mean.shape)}, 'var' {tuple(var.shape)} and 'third_moment' "
                         f"{tuple(third_moment.shape)} do not broadcast: {e}") from None
    dtype = mean.dtype
    cdt = _compute_dtype(dtype)
    be = _dispatch.select(fn, "gms_fit", backend, mean.device, cdt, op="gms_fit")
    args = [t.to(cdt) for t in (mean, var, third_moment)]
    w, it, lr_, fl, ne = float(weight), int(iters), float(lr), float(var_floor), int(n_el or 0)
    if be == "reference":
        out = _ref.fit_ref(*args, weight=w, method=method, iters=it, lr=lr_, var_floor=fl, n_el=n_el)
    elif be == "triton":
        from ..triton.gms_fit import gms_fit_triton

        out = gms_fit_triton(*args, w, FIT_METHODS[method], it, lr_, fl, ne)
    else:
        out = torch.ops.gmmkernels.gms_fit.default(*args, w, FIT_METHODS[method], it, lr_, fl, ne)
    return GMSFit(*(t.to(dtype) for t in out))


# ----------------------------------------------------------------------------------------------------------
# gms_step


def gms_step(x_t: Tensor, e1: Tensor, e2: Tensor, e3: Tensor, coeffs, *, method: str = "closed", weight: float = 1.0 / 3.0,
             per_image: bool = True, seed: Optional[int] = None, offset: int = 0,
             generator: Optional[torch.Generator] = None, iters: int = 70, lr: float = 0.06, var_floor: float = 0.1,
             n_el: Optional[int] = None, var_clip: Optional[float] = None, return_params: bool = False,
             backend: str = "auto"):
    """One fused GMS transition x_t -> x_s: moments, fit, component choice and draw, elementwise in one pass.

    Args:
      x_t, e1, e2, e3: tensors of one shape, dtype and device; e_k are the heads' predictions of E[eps^k | x_t].
      coeffs: a :class:`GMSCoeffs` (or a 5-sequence a_t, sigma_t, A, B, lam2), see GMSCoeffs.from_alphas_cumprod.
      method: "closed" | "adan" (see :func:`gms_fit`) | "gaussian" (no fit: x_s = M1 + sqrt(min(V, var_clip)) z, the
        official last transition / SN-DDPM step).
      The moments follow the official ``predict_xpre_*`` with its clamps (docs/kernels.md (gms_step)):
        E0 = clamp((x_t - sigma_t e1)/a_t, -1, 1), Var0 = clamp(sigma_t^2/a_t^2 (e2 - e1^2), 0, 1),
        E2 = clamp((x_t^2 - 2 sigma_t x_t e1 + sigma_t^2 e2)/a_t^2, 0, 1),
        E3 = (x_t^3 - 3 sigma_t x_t^2 e1 + 3 sigma_t^2 x_t e2 - sigma_t^3 e3)/a_t^3, E3 = E3 if |E3| <= |E0| else E0,
        E3 = clamp(E3, -1, 1); M1 = clamp(A x_t + B E0, -1000, 1000), V = clamp(lam2 + B^2 Var0, 0, 1),
        M3 = (A x_t)^3 + 3 (A x_t)^2 B E0 + 3 A x_t B^2 E2 + B^3 E3 + 3 lam2 (A x_t + B E0)  (float64 in the kernels).
        NaN in any input of an element gives NaN for that element.
      per_image: True (the official sampler): one component draw per leading index (x_t.shape[0], an image), shared by
        all its elements; False: an independent draw per element (same marginals, different joint law).
      The draw: component 1 (mean mu1) when u < weight, else component 2; x_s = mu + sqrt(v) z with one z per element,
        shared by both components as in the official code. u and z come from a counter-based Philox4x32-10 stream of
        (seed, index, offset): u at (image or element index, tag 6), z by Box-Muller at (element index, tag 7).
        Same seed and offset -> the same output on a backend (and, up to rounding, across backends).
      seed: 64-bit int; None draws one from ``generator`` (or torch's default CPU generator).
      offset: a step counter in [0, 2^32) (use a different one per sampling step with one seed).
      var_clip: upper bound of the variance for method "gaussian" (None: no bound).
      iters, lr, var_floor, n_el: see :func:`gms_fit` (n_el defaults to x_t.numel()).
      return_params: also return the fitted (mu1, mu2, var).
      backend: "auto" | "reference" | "cpu" | "cuda".
    Returns:
      x_s (the dtype of x_t), or GMSStep(x, mu1, mu2, var) when return_params. No autograd.
    """
    fn = "gms_step"
    V.tensors(fn, [("x_t", x_t), ("e1", e1), ("e2", e2), ("e3", e3)])
    for name, t in (("e1", e1), ("e2", e2), ("e3", e3)):
        if t.shape != x_t.shape:
            raise ValueError(f"{fn}: argument '{name}' has shape {tuple(t.shape)} but 'x_t' has {tuple(x_t.shape)}")
    V.choice(fn, "method", method, STEP_METHODS)
    _check_scalars(fn, weight, iters, lr, var_floor, n_el)
    try:
        c = GMSCoeffs(*[float(v) for v in coeffs])
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: argument 'coeffs' must be a GMSCoeffs or 5 numbers (a_t, sigma_t, A, B, lam2), got {coeffs!r}") from None
    if not all(math.isfinite(v) for v in c) or c.a_t <= 0 or c.sigma_t < 0 or c.lam2 < 0:
        raise ValueError(f"{fn}: argument 'coeffs' needs finite values with a_t > 0, sigma_t >= 0, lam2 >= 0, got {c}")
    if var_clip is None:
        var_clip = math.inf
    var_clip = V.number(fn, "var_clip", var_clip, lo=0.0, finite=False, what="None or a number >= 0")
    V.integer(fn, "offset", offset, lo=0, hi=(1 << 32) - 1, what="an int in [0, 2^32)")
    per_image = V.flag(fn, "per_image", per_image)
    return_params = V.flag(fn, "return_params", return_params)
    V.generator(fn, "generator", generator)
    if seed is None:
        seed = int(torch.randint(-(1 << 63), (1 << 63) - 1, (), generator=generator, dtype=torch.int64))
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{fn}: argument 'seed' must be an int or None, got {type(seed).__name__}")
    seed = ((int(seed) + (1 << 63)) % (1 << 64)) - (1 << 63)  # the same 64 bits as a signed int64
    dtype = x_t.dtype
    cdt = _compute_dtype(dtype)
    be = _dispatch.select(fn, "gms_fit", backend, x_t.device, cdt, op="gms_step")
    args = [t.to(cdt) for t in (x_t, e1, e2, e3)]
    if be == "reference":
        x, mu1, mu2, v = _ref.gms_step_ref(*args, *c, weight=float(weight), method=method, iters=int(iters), lr=float(lr),
                                          var_floor=float(var_floor), n_el=n_el, per_image=bool(per_image),
                                          var_clip=float(var_clip), seed=seed, offset=int(offset))
    else:
        x, mu1, mu2, v = torch.ops.gmmkernels.gms_step.default(
            *args, *c, float(weight), STEP_METHODS[method], int(iters), float(lr), float(var_floor), int(n_el or 0),
            bool(per_image), float(var_clip), seed, int(offset), bool(return_params))
    if not return_params:
        return x.to(dtype)
    return GMSStep(x.to(dtype), mu1.to(dtype), mu2.to(dtype), v.to(dtype))


# ----------------------------------------------------------------------------------------------------------
# fake kernels and autograd of the native ops: sampling-time ops, with no derivative


def _no_grad_backward(name):
    def _backward(ctx, *grads):
        raise RuntimeError(f"gmmkernels.{name} has no derivative: it is a sampling-time op (detach its inputs)")

    return _backward


def _setup(ctx, inputs, output):
    pass


if _backend.has_schema("gms_fit"):

    @torch.library.register_fake("gmmkernels::gms_fit")
    def _gms_fit_fake(mean, var, m3, weight, method, iters, lr, var_floor, n_el):
        torch._check(var.shape == mean.shape, lambda: "gms_fit: var must have the shape of mean")
        torch._check(m3.shape == mean.shape, lambda: "gms_fit: m3 must have the shape of mean")
        torch._check(mean.dtype in (torch.float32, torch.float64), lambda: "gms_fit: float32 or float64 expected")
        return tuple(torch.empty_like(mean, memory_format=torch.contiguous_format) for _ in range(3))

    torch.library.register_autograd("gmmkernels::gms_fit", _no_grad_backward("gms_fit"), setup_context=_setup)

if _backend.has_schema("gms_step"):

    @torch.library.register_fake("gmmkernels::gms_step")
    def _gms_step_fake(x_t, e1, e2, e3, a_t, sigma_t, A, B, lam2, weight, method, iters, lr, var_floor, n_el, per_image,
                       var_clip, seed, offset, with_params):
        for t in (e1, e2, e3):
            torch._check(t.shape == x_t.shape, lambda: "gms_step: e1, e2, e3 must have the shape of x_t")
        out = torch.empty_like(x_t, memory_format=torch.contiguous_format)
        if with_params:
            params = [torch.empty_like(x_t, memory_format=torch.contiguous_format) for _ in range(3)]
        else:
            params = [x_t.new_empty((0,)) for _ in range(3)]
        return out, *params

    torch.library.register_autograd("gmmkernels::gms_step", _no_grad_backward("gms_step"), setup_context=_setup)
