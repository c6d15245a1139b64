"""Gibbs sampling of a conjugate diagonal Bayesian Gaussian mixture with many independent chains: one fused
``gibbs_sweep`` launch per sweep (gmmkernels/ops/gibbs_sweep.py; docs/kernels.md (gibbs_sweep))."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..ops.gibbs_sweep import GibbsPrior, gibbs_sweep
from .kmeans import kmeans_plusplus


class GibbsResult(NamedTuple):
    """Final state of every chain (logw [C, K], means / var [C, K, D], z [C, N] int32) and, if asked, the traces
    [S, C, ...] of the kept sweeps."""

    logw: Tensor
    means: Tensor
    var: Tensor
    z: Tensor
    trace: Optional[dict]


def gibbs(
    x: Tensor,
    n_components: int,
    n_chains: int = 1,
    n_sweeps: int = 1000,
    *,
    prior: Optional[GibbsPrior] = None,
    seed: int = 0,
    init: Optional[tuple] = None,
    burn_in: int = 0,
    thin: int = 1,
    keep_trace: bool = False,
    backend: str = "auto",
) -> GibbsResult:
    """Run ``n_chains`` independent Gibbs chains of the conjugate diagonal Bayesian GMM on x [N, D] (one data set for
    all chains) or [C, N, D] (one per chain). One kernel launch per sweep; counter-based random numbers keyed by
    (seed, chain, sweep), so the same seed gives the same chains. ``init`` = (logw, means, var); default: weights
    uniform, means at k-means++ seeds of the data (per chain, drawn from ``seed``), variances = data variance."""
    fn = "gibbs"
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() not in (2, 3):
        raise ValueError(f"{fn}: argument 'x' must be a floating tensor [N, D] or [C, N, D]")
    K, C = n_components, n_chains
    N, D = x.shape[-2:]
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"{fn}: n_components must be a positive int, got {K!r}")
    if x.dim() == 3 and x.shape[0] != C:
        raise ValueError(f"{fn}: x has {x.shape[0]} data sets but n_chains={C}")
    prior = prior or GibbsPrior()
    if min(prior.alpha, prior.kappa0, prior.a0, prior.b0) <= 0:
        raise ValueError(f"{fn}: prior alpha, kappa0, a0, b0 must be positive, got {prior}")
    dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x = x.to(dt)
    if init is None:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        xs = x.expand(C, N, D) if x.dim() == 3 else x.unsqueeze(0).expand(C, N, D)
        if K > N:
            raise ValueError(f"{fn}: n_components={K} exceeds the number of points N={N} (k-means++ initialisation)")
        idx = kmeans_plusplus(xs.cpu(), K, g).to(x.device)
        means = xs[torch.arange(C, device=x.device)[:, None], idx]
        var = xs.var(1, unbiased=False).clamp_min(1e-6)[:, None].expand(C, K, D).contiguous()
        logw = torch.full((C, K), -math.log(K), dtype=dt, device=x.device)
    else:
        logw, means, var = (t.to(device=x.device, dtype=dt).contiguous() for t in init)
    traces = {"logw": [], "means": [], "var": []} if keep_trace else None
    z = None
    for s in range(n_sweeps):
        z, logw, means, var = gibbs_sweep(x, logw, means, var, prior, seed=seed, step=s, backend=backend)
        if keep_trace and s >= burn_in and (s - burn_in) % thin == 0:
            traces["logw"].append(logw)
            traces["means"].append(means)
            traces["var"].append(var)
    if keep_trace:
        traces = {k: torch.stack(v) if v else None for k, v in traces.items()}
    return GibbsResult(logw, means, var, z, traces)
