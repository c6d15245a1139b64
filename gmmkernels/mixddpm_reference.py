"""Pure-PyTorch reference of the mixDDPM dispatcher (algorithms.md section 4.2 and 4.5, kernel K5).

This is the specification and the test oracle of ``gmmkernels::mixture_dispatch`` (C++ CPU, CUDA) and of
its Triton version. It materialises the N x K distance matrix and runs in any dtype (float64 in the tests).

Given points x0 [N, D], centers c [K, D], per-row coefficients a [N], sigma [N] and noise eps [N, D]:

  j[n]     = argmin_k |x0_n - c_k|^2          nearest center ("the dispatcher" D(x0))
  x_t[n]   = a_n x0_n + (1 - a_n) c_j + sigma_n eps_n
  dist2[n] = |x0_n - c_j|^2

With a = sqrt(abar_t) and sigma = sqrt(1 - abar_t) this is the centred forward process of mixDDPM: DDPM on
y = x - c_j, shifted back, so x_T -> N(c_j, I).

Conventions shared by every backend:
  * ties: the lowest index k among the minimisers wins;
  * non-finite distances (NaN, +-inf) never win: they compare as +inf. A row with no finite distance (a NaN
    or inf in x0, or every center non-finite) is assigned center 0, and its x_t / dist2 come out NaN or inf
    as the arithmetic gives. (The kernels' GEMM form can give -inf or NaN where the direct form gives +inf,
    e.g. for an infinite x0; the rule makes both agree.)
  * eps = None means no noise term (x_t = a x0 + (1 - a) c_j).

The kernels rank the centers by the GEMM form |c_k|^2 - 2 x0_n . c_k (the constant |x0_n|^2 dropped), so
in float32 two centers whose distances to x0_n differ by less than about 1e-7 |x0_n| |c_k| can be ranked
differently from this float64 reference (and from each other); exact ties (duplicate centers) are broken
identically everywhere. dist2 is computed directly from x0_n - c_j in every backend (no cancellation).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor


class Dispatch(NamedTuple):
    """Outputs of the dispatcher: noised points [N, D], assignments [N] (int64), squared distances [N]."""

    x_t: Tensor
    assignment: Tensor
    dist2: Tensor


def nearest_center_ref(x0: Tensor, centers: Tensor) -> Tensor:
    """argmin_k |x0_n - c_k|^2 [N] int64, lowest index on ties, non-finite distances treated as +inf."""
    d = ((x0.unsqueeze(1) - centers.unsqueeze(0)) ** 2).sum(-1)  # [N, K]
    d = torch.where(torch.isfinite(d), d, torch.full_like(d, float("inf")))
    if d.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=x0.device)
    return torch.argmin(d, dim=1)  # torch.argmin returns the first minimiser


def mixture_dispatch_ref(x0: Tensor, centers: Tensor, a: Tensor, sigma: Tensor, eps: Optional[Tensor] = None,
                         assignment: Optional[Tensor] = None) -> Dispatch:
    """Dispatch + centred forward noising by direct evaluation. ``a``/``sigma``: [N] or broadcastable to [N].

    ``assignment`` may be given to skip the argmin (e.g. labels as clusters); differentiable in x0, centers, a,
    sigma and eps through autograd (the assignment is piecewise constant)."""
    j = nearest_center_ref(x0.detach(), centers.detach()) if assignment is None else assignment
    cj = centers[j]
    a_ = torch.as_tensor(a, dtype=x0.dtype, device=x0.device).reshape(-1, 1) if torch.is_tensor(a) else a
    s_ = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device).reshape(-1, 1) if torch.is_tensor(sigma) else sigma
    x_t = a_ * x0 + (1 - a_) * cj
    if eps is not None:
        x_t = x_t + s_ * eps
    return Dispatch(x_t, j, ((x0 - cj) ** 2).sum(-1))


def kmeans_ref(x: Tensor, k: int, iters: int = 50, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Plain Lloyd k-means with k-means++ seeding (test oracle of :func:`gmmkernels.mixddpm_ops.kmeans`).
    Returns (centers [k, D], assignment [N])."""
    g = torch.Generator().manual_seed(seed)
    xs = x.detach().double().cpu()
    c = _kmeanspp(xs, k, g)
    for _ in range(iters):
        j = nearest_center_ref(xs, c)
        c_new = _segment_mean(xs, j, k, c)
        if torch.equal(c_new, c):
            break
        c = c_new
    return c.to(x), nearest_center_ref(xs, c).to(x.device)


def _kmeanspp(x: Tensor, k: int, g: torch.Generator) -> Tensor:
    N = x.shape[0]
    idx = [int(torch.randint(N, (1,), generator=g))]
    d2 = ((x - x[idx[0]]) ** 2).sum(-1)
    for _ in range(1, k):
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / N)
        i = int(torch.multinomial(p, 1, generator=g))
        idx.append(i)
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(-1))
    return x[idx].clone()


def _segment_mean(x: Tensor, j: Tensor, k: int, old: Tensor) -> Tensor:
    s = torch.zeros(k, x.shape[1], dtype=x.dtype).index_add_(0, j, x)
    n = torch.bincount(j, minlength=k).to(x.dtype)
    return torch.where(n[:, None] > 0, s / n.clamp_min(1)[:, None], old)
