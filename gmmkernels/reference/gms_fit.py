"""Pure-PyTorch references of the GMS kernels (Gaussian Mixture Solvers, Guo et al., arXiv 2311.00941).

The native kernels (csrc/include/gmmkernels/gms_fit.h) and the Triton kernels are tested against these functions;
the public ops live in :mod:`gmmkernels.ops.gms_fit`, whose docstrings describe the conventions.

  closed_fit_ref      exact method-of-moments fit with the documented fallbacks (float64)
  adan_fit_ref        the official solver: autograd on J = mean(g0^2 + g1^2 + g2^2) + an Adan recursion written
                      from the update formulas (Xie et al., "Adan", arXiv 2208.06677, Algorithm 1 as implemented by
                      the authors' ``adan.py``: no weight decay, no gradient clipping, first difference 0)
  step_moments_ref    moments of x_s | x_t from the three head outputs with the official clamps
  gms_step_ref        moments -> fit -> component -> x_s, the same random numbers as the native kernels
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .rng import philox_normal_ref, philox_uniform_ref, seed64

ADAN_BETAS = (0.9, 0.92, 0.92)
ADAN_EPS = 1e-8
BETA_MIN, BETA_MAX, BETA_INIT, MU2_OFFSET = 0.1, 1.2, 0.998, 1e-3
TAG_COMPONENT, TAG_NOISE = 6, 7


# ----------------------------------------------------------------------------------------------------------
# fits


def _cbrt(x: Tensor) -> Tensor:
    return torch.sign(x) * x.abs().pow(1.0 / 3.0)


def closed_fit_ref(mean: Tensor, var: Tensor, third_moment: Tensor, weight: float = 1.0 / 3.0, var_floor: float = 0.1):
    """Exact fit of w N(mu1, v) + (1-w) N(mu2, v) to (mean, var, raw third moment), in float64.

    m3c = M3 - 3 M1 V - M1^3; delta = cbrt(m3c / (w(1-w)(1-2w))) (0 if m3c = 0; +-inf if w = 1/2 and m3c != 0);
    v = V - w(1-w) delta^2; if not v >= var_floor V: v = var_floor V, delta = sign(delta) sqrt((V - v) / (w(1-w))).
    mu1 = M1 + (1-w) delta, mu2 = M1 - w delta. var < 0 counts as 0; NaN third moment or non-finite mean/var: NaN.
    """
    M1, V, M3 = mean.double(), var.double(), third_moment.double()
    bad = torch.isnan(M3) | ~torch.isfinite(M1) | ~torch.isfinite(V)
    V = torch.where(V > 0, V, torch.zeros_like(V))
    w = float(weight)
    q = 1.0 - w
    pq = w * q
    c = pq * (q - w)
    m3c = M3 - M1 * (3.0 * V + M1 * M1)
    if c != 0.0:
        delta = _cbrt(m3c / c)
    else:
        delta = torch.copysign(torch.full_like(m3c, math.inf), m3c)
    delta = torch.where(m3c == 0, torch.zeros_like(delta), delta)
    v = V - pq * delta * delta
    vmin = var_floor * V
    fb = ~(v >= vmin)
    v = torch.where(fb, vmin, v)
    delta = torch.where(fb, torch.copysign(torch.sqrt((V - vmin) / pq), delta), delta)
    mu1 = M1 + q * delta
    mu2 = M1 - w * delta
    nan = torch.full_like(M1, math.nan)
    return torch.where(bad, nan, mu1), torch.where(bad, nan, mu2), torch.where(bad, nan, v)


def adan_fit_ref(mean: Tensor, var: Tensor, third_moment: Tensor, weight: float = 1.0 / 3.0, iters: int = 70,
                 lr: float = 0.06, n_el: Optional[int] = None):
    """The official GMS solver (``sample.py::solve_gmm``) re-implemented eagerly, in the dtype of ``mean``.

    One leaf theta = stack(mu1, mu2, beta) initialised to (M1, M1 - 1e-3, 0.998); each iteration evaluates
    J = sum(g0^2 + g1^2 + g2^2) / n_el (the mean over all elements when n_el is None) with v = V clamp(beta, 0.1, 1.2)
    and takes the autograd gradient, then one Adan step (lr, betas (0.9, 0.92, 0.92), eps 1e-8):
        diff = g_k - g_{k-1} (0 at k = 1);  m = b1 m + (1-b1) g;  d = b2 d + (1-b2) diff;  u = g + b2 diff;
        n = b3 n + (1-b3) u^2;  den = sqrt(n) / sqrt(1 - b3^k) + eps;
        theta -= lr / (1 - b1^k) * m / den;  theta -= lr b2 / (1 - b2^k) * d / den.
    Returns (mu1, mu2, V clamp(beta, 0.1, 1.2)). This is also the eager baseline of the benchmarks.
    """
    b1, b2, b3 = ADAN_BETAS
    w = float(weight)
    N = mean.numel() if n_el is None else int(n_el)
    mean, var, m3 = mean.detach(), var.detach(), third_moment.detach()
    with torch.enable_grad():
        theta = torch.stack([mean, mean - MU2_OFFSET, torch.full_like(mean, BETA_INIT)]).requires_grad_(True)
        m = torch.zeros_like(theta)
        d = torch.zeros_like(theta)
        n = torch.zeros_like(theta)
        neg_prev = None
        for step in range(1, iters + 1):
            mu1, mu2, beta = theta[0], theta[1], theta[2]
            v = var * torch.clamp(beta, BETA_MIN, BETA_MAX)
            e0 = (w * mu1 + (1 - w) * mu2 - mean).pow(2)
            e1 = (w * (mu1 ** 2 + v) + (1 - w) * (mu2 ** 2 + v) - (mean ** 2 + var)).pow(2)
            e2 = (w * (mu1 ** 3 + 3 * mu1 * v) + (1 - w) * (mu2 ** 3 + 3 * mu2 * v) - m3).pow(2)
            tot = e0 + e1 + e2
            loss = tot.mean() if n_el is None else tot.sum() / N
            (g,) = torch.autograd.grad(loss, theta)
            with torch.no_grad():
                if neg_prev is None:
                    neg_prev = -g
                diff = neg_prev.add_(g)
                m.mul_(b1).add_(g, alpha=1 - b1)
                d.mul_(b2).add_(diff, alpha=1 - b2)
                upd = diff.mul_(b2).add_(g)
                n.mul_(b3).addcmul_(upd, upd, value=1 - b3)
                den = n.sqrt() / math.sqrt(1 - b3 ** step) + ADAN_EPS
                theta.addcdiv_(m, den, value=-lr / (1 - b1 ** step))
                theta.addcdiv_(d, den, value=-lr * b2 / (1 - b2 ** step))
                neg_prev = -g
    theta = theta.detach()
    return theta[0].clone(), theta[1].clone(), var * torch.clamp(theta[2], BETA_MIN, BETA_MAX)


def fit_ref(mean, var, third_moment, weight=1.0 / 3.0, method="closed", iters=70, lr=0.06, var_floor=0.1, n_el=None):
    """Dispatch to :func:`closed_fit_ref` (returned in the input dtype) or :func:`adan_fit_ref`."""
    if method == "closed":
        out = closed_fit_ref(mean, var, third_moment, weight, var_floor)
        return tuple(t.to(mean.dtype) for t in out)
    return adan_fit_ref(mean, var, third_moment, weight, iters, lr, n_el)


# ----------------------------------------------------------------------------------------------------------
# moments of one step


def step_moments_ref(x_t: Tensor, e1: Tensor, e2: Tensor, e3: Tensor, a_t: float, sigma_t: float, A: float, B: float,
                     lam2: float):
    """(M1, V, M3) of x_s | x_t with the clamps of the official ``predict_xpre_*`` (docs/kernels.md (gms_step)), float64.

    NaN in any input gives NaN moments (the official |E3| <= |E0| heuristic alone would hide a NaN e3).
    """
    x, e1, e2, e3 = (t.double() for t in (x_t, e1, e2, e3))
    at, st = float(a_t), float(sigma_t)
    E0 = torch.clamp((x - st * e1) / at, -1, 1)
    Var0 = torch.clamp(st * st / (at * at) * (e2 - e1 * e1), 0, 1)
    E2 = torch.clamp((x * x - 2 * st * x * e1 + st * st * e2) / (at * at), 0, 1)
    E3 = (x ** 3 - 3 * st * x * x * e1 + 3 * st * st * x * e2 - st ** 3 * e3) / at ** 3
    E3 = torch.where(E3.abs() <= E0.abs(), E3, E0)
    E3 = torch.clamp(E3, -1, 1)
    ax = A * x
    M1 = torch.clamp(ax + B * E0, -1000, 1000)
    V = torch.clamp(lam2 + B * B * Var0, 0, 1)
    M3 = ax ** 3 + 3 * ax * ax * B * E0 + 3 * ax * B * B * E2 + B ** 3 * E3 + 3 * lam2 * (ax + B * E0)
    bad = torch.isnan(x) | torch.isnan(e1) | torch.isnan(e2) | torch.isnan(e3)
    nan = torch.full_like(x, math.nan)
    return torch.where(bad, nan, M1), torch.where(bad, nan, V), torch.where(bad, nan, M3)



# ----------------------------------------------------------------------------------------------------------
# the fused step


def gms_step_ref(x_t: Tensor, e1: Tensor, e2: Tensor, e3: Tensor, a_t: float, sigma_t: float, A: float, B: float,
                 lam2: float, weight: float = 1.0 / 3.0, method: str = "closed", iters: int = 70, lr: float = 0.06,
                 var_floor: float = 0.1, n_el: Optional[int] = None, per_image: bool = True,
                 var_clip: float = math.inf, seed: int = 0, offset: int = 0):
    """Reference of the fused step. Returns (x_s, mu1, mu2, v) in the dtype of x_t.

    Moments in float64; the adan fit runs in the input dtype (like the kernels); the closed fit in float64.
    Component 1 (mean mu1) when u < weight, u = uniform(seed, image index or element index, offset, tag 6);
    z = normal(seed, element index, offset, tag 7); x_s = mu + sqrt(max(v, 0)) z.
    """
    dtype = x_t.dtype
    M1, V, M3 = step_moments_ref(x_t, e1, e2, e3, a_t, sigma_t, A, B, lam2)
    N = x_t.numel() if not n_el else int(n_el)
    if method == "adan":
        mu1, mu2, v = adan_fit_ref(M1.to(dtype), V.to(dtype), M3.to(dtype), weight, iters, lr, n_el=N)
        mu1, mu2, v = mu1.double(), mu2.double(), v.double()
    elif method == "gaussian":
        mu1 = mu2 = M1
        v = torch.where(V > var_clip, torch.full_like(V, var_clip), V)
    else:
        mu1, mu2, v = closed_fit_ref(M1, V, M3, weight, var_floor)
    idx = torch.arange(x_t.numel(), dtype=torch.int64).reshape(x_t.shape)
    if per_image and x_t.dim() > 0 and x_t.shape[0] > 0:
        cidx = idx // (x_t.numel() // x_t.shape[0])
    else:
        cidx = idx
    s = seed64(seed)
    u = philox_uniform_ref(cidx, s, offset, TAG_COMPONENT).to(x_t.device)
    z = philox_normal_ref(idx, s, offset, TAG_NOISE).to(x_t.device)
    mu = torch.where(u < weight, mu1, mu2)
    vv = torch.where(v < 0, torch.zeros_like(v), v)
    x_s = mu + torch.sqrt(vv) * z
    return x_s.to(dtype), mu1.to(dtype), mu2.to(dtype), v.to(dtype)
