"""k-means: k-means++ seeding and Lloyd's iterations on the fused dispatcher kernel (the one k-means of the package).

  kmeans_plusplus(x, n_components)   batched greedy k-means++ seeds (indices) of data sets x [..., N, D]
  kmeans(x, k)                       Lloyd's k-means of x [N, ...] (mixDDPM's cluster centers)
  lloyd(x, centers)                  the Lloyd loop itself, batched, shared by kmeans and the EM / VB initialisation

Seeding follows Arthur & Vassilvitskii (2007) with scikit-learn's greedy variant: each new seed is the best of
2 + floor(log K) candidates drawn with probability proportional to the squared distance to the nearest seed so far.
Assignments use the GEMM form |c|^2 - 2 x.c (the dispatcher kernel's, lowest index on ties); centers are segmented
means; an empty cluster keeps its previous center.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .. import _validate as V
from ..ops.mixture_dispatch import BACKENDS, nearest_center
from ._common import check_components, check_data


class KMeans(NamedTuple):
    centers: Tensor      # [k, D] (in x's trailing shape)
    assignment: Tensor   # [N] int64
    inertia: float       # mean squared distance to the assigned center
    iters: int


def kmeans_plusplus(x: Tensor, n_components: int, generator: Optional[torch.Generator] = None, *,
                    n_local_trials: Optional[int] = None) -> Tensor:
    """Indices [..., K] of k-means++ seeds in each data set of x [..., N, D].

    ``n_local_trials`` candidates per new seed (default 2 + floor(log K), scikit-learn's; 1 gives plain k-means++).
    Degenerate data are fine: when every remaining point coincides with a seed (fewer distinct points than K),
    the next seed is drawn uniformly, so duplicated seeds are returned rather than an error."""
    fn = "kmeans_plusplus"
    check_data(fn, x)
    N = x.shape[-2]
    K = check_components(fn, n_components, N)
    trials = 2 + int(math.log(K)) if n_local_trials is None else V.integer(fn, "n_local_trials", n_local_trials, lo=1)
    V.generator(fn, "generator", generator)
    batch = x.shape[:-2]
    x3 = x.reshape(-1, N, x.shape[-1])
    B = x3.shape[0]
    ar = torch.arange(B, device=x.device)
    idx = torch.empty(B, K, dtype=torch.long, device=x.device)
    idx[:, 0] = torch.randint(N, (B,), generator=generator, device=x.device)
    d2 = ((x3 - x3[ar, idx[:, 0]].unsqueeze(1)) ** 2).sum(-1)  # [B, N]
    for c in range(1, K):
        p = d2.double().clamp_min(0)  # float64: tiny float32 distances must not underflow to an all-zero row
        tot = p.sum(-1, keepdim=True)
        p = torch.where(tot > 0, p / tot.clamp_min(torch.finfo(torch.float64).tiny), torch.full_like(p, 1.0 / N))
        cand = torch.multinomial(p, trials, replacement=True, generator=generator)  # [B, T]
        dc = torch.cdist(x3[ar[:, None], cand], x3).pow(2)  # [B, T, N]
        newd = torch.minimum(dc, d2.unsqueeze(1))
        best = newd.sum(-1).argmin(-1)
        idx[:, c] = cand[ar, best]
        d2 = newd[ar, best]
    return idx.reshape(*batch, K)


def _assign(x3: Tensor, c: Tensor, backend: str) -> Tensor:
    """Nearest center [B, N] of x3 [B, N, D] among c [B, K, D] (GEMM-form distances, lowest index on ties)."""
    if x3.shape[0] == 1:
        return nearest_center(x3[0], c[0], backend=backend).unsqueeze(0)
    score = (c * c).sum(-1).unsqueeze(1) - 2.0 * (x3 @ c.transpose(1, 2))  # [B, N, K]
    return score.argmin(-1)


def lloyd(x: Tensor, centers: Tensor, *, max_iter: int = 100, tol: float = 0.0,
          backend: str = "auto") -> Tuple[Tensor, Tensor, int]:
    """Lloyd's iterations on x [B, N, D] from centers [B, K, D]: returns (centers, assignment [B, N], iterations).
    Stops when no center moves by more than ``tol`` (0: an exact fixed point) or after ``max_iter``."""
    K = centers.shape[1]
    c = centers
    it = 0
    with torch.no_grad():
        for it in range(1, max_iter + 1):
            j = _assign(x, c, backend)
            oh = torch.nn.functional.one_hot(j, K).to(x.dtype)  # [B, N, K]
            cnt = oh.sum(1)  # [B, K]
            c_new = torch.where(cnt[..., None] > 0, (oh.transpose(1, 2) @ x) / cnt.clamp_min(1)[..., None], c)
            shift = float((c_new - c).abs().max()) if c.numel() else 0.0
            c = c_new
            if shift <= tol:
                break
        return c, _assign(x, c, backend), it


def kmeans(x: Tensor, k: int, *, iters: int = 50, seed: int = 0, tol: float = 0.0, backend: str = "auto",
           init: Optional[Tensor] = None) -> KMeans:
    """Lloyd's k-means on x [N, ...]: k-means++ seeding (``seed``) or ``init`` [k, ...], then alternating the fused
    dispatcher (assignment, GEMM-form distances) and a segmented mean. Empty clusters keep their previous center.
    Stops when no center moves by more than ``tol`` (0: exact fixed point) or after ``iters``."""
    fn = "kmeans"
    check_data(fn, x, layout="[N, ...]")
    N = x.shape[0]
    k = V.integer(fn, "k", k, lo=1)
    if N < k:
        raise ValueError(f"{fn}: need at least k={k} points, got N={N}")
    iters = V.integer(fn, "iters", iters, lo=1)
    tol = V.number(fn, "tol", tol, lo=0.0)
    seed = V.seed(fn, "seed", seed)
    V.choice(fn, "backend", backend, BACKENDS)
    xf = x.detach().reshape(N, -1)
    if init is not None:
        V.tensors(fn, [("x", x), ("init", init)], same_dtype=False)
        if init.shape[0] != k or init[0].numel() != xf.shape[1]:
            raise ValueError(f"{fn}: argument 'init' must have shape [k={k}, ...] with {xf.shape[1]} values per "
                             f"center, got {list(init.shape)}")
        V.finite(fn, "init", init)
        c = init.detach().reshape(k, -1).to(xf).clone()
    else:
        g = torch.Generator().manual_seed(seed)
        xs = xf.double().cpu()
        c = xs[kmeans_plusplus(xs, k, g)].to(xf)
    c, j, it = lloyd(xf.unsqueeze(0), c.unsqueeze(0), max_iter=iters, tol=tol, backend=backend)
    inertia = float(((xf - c[0][j[0]]) ** 2).sum(-1).double().mean())
    return KMeans(c[0].reshape(k, *x.shape[1:]), j[0], inertia, it)
