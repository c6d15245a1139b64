"""Test oracle of :func:`gmmkernels.kmeans`: plain k-means++ seeding and Lloyd iterations in float64, written
without the fused kernels. Production code does not call it (k-means lives in gmmkernels/fit/kmeans.py)."""
from __future__ import annotations

import torch
from torch import Tensor

from .mixture_dispatch import nearest_center_ref


def kmeans_ref(x: Tensor, k: int, iters: int = 50, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Plain Lloyd k-means with k-means++ seeding (test oracle of :func:`gmmkernels.kmeans`).
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
