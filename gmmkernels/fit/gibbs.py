"""Gibbs sampling of a conjugate diagonal Bayesian Gaussian mixture with many independent chains: one fused
``gibbs_sweep`` launch per sweep (gmmkernels/ops/gibbs_sweep.py; docs/kernels.md (gibbs_sweep))."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import _dispatch
from .. import _validate as V
from ..ops.gibbs_sweep import GibbsPrior, check_prior, check_state, sweep
from ._common import check_components, check_data
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
    distributed: bool = False,
    group=None,
) -> GibbsResult:
    """Run ``n_chains`` independent Gibbs chains of the conjugate diagonal Bayesian GMM on x [N, D] (one data set for
    all chains) or [C, N, D] (one per chain). One kernel launch per sweep; counter-based random numbers keyed by
    (seed, chain, sweep), so the same seed gives the same chains. ``init`` = (logw [C, K], means [C, K, D],
    var [C, K, D]), or [K], [K, D], [K, D] for every chain; default: weights uniform, means at k-means++ seeds of the
    data (per chain, drawn from ``seed``), variances = data variance. ``n_sweeps`` >= 1; with ``keep_trace`` the
    sweeps burn_in, burn_in + thin, ... are kept.

    ``distributed=True`` shards the chains over the processes of ``group`` (default: the world; torch.distributed
    initialised, e.g. under torchrun): every process passes the same arguments (the same x), runs a contiguous block
    of the chains with the random streams those chains have in the single-process run, and receives every chain's
    result, so the result equals the single-process one (on a counter-based backend; "reference" draws from torch's
    global generator)."""
    fn = "gibbs"
    check_data(fn, x, layout="[N, D] or [C, N, D]", ranks=(2, 3))
    N, D = x.shape[-2:]
    K = check_components(fn, n_components, N)
    C = V.integer(fn, "n_chains", n_chains, lo=1)
    n_sweeps = V.integer(fn, "n_sweeps", n_sweeps, lo=1)
    burn_in = V.integer(fn, "burn_in", burn_in, lo=0)
    thin = V.integer(fn, "thin", thin, lo=1)
    keep_trace = V.flag(fn, "keep_trace", keep_trace)
    seed = V.seed(fn, "seed", seed)
    distributed = V.flag(fn, "distributed", distributed)
    if distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(f"{fn}: distributed=True needs torch.distributed initialised (launch with torchrun and call "
                             "torch.distributed.init_process_group)")
    prior = check_prior(fn, GibbsPrior() if prior is None else prior)
    if x.dim() == 3 and x.shape[0] != C:
        raise ValueError(f"{fn}: argument 'x' has {x.shape[0]} data sets but n_chains={C}")
    if keep_trace and burn_in >= n_sweeps:
        raise ValueError(f"{fn}: argument 'burn_in'={burn_in} leaves none of the n_sweeps={n_sweeps} sweeps to keep")
    dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x = x.to(dt)
    b = _dispatch.select(fn, "gibbs_sweep", backend, x.device, dt)
    if init is None:
        g = torch.Generator(device="cpu").manual_seed(seed)
        xs = x.expand(C, N, D) if x.dim() == 3 else x.unsqueeze(0).expand(C, N, D)
        idx = kmeans_plusplus(xs.cpu(), K, g).to(x.device)
        means = xs[torch.arange(C, device=x.device)[:, None], idx]
        var = xs.var(1, unbiased=False).clamp_min(1e-6)[:, None].expand(C, K, D).contiguous()
        logw = torch.full((C, K), -math.log(K), dtype=dt, device=x.device)
    else:
        logw, means, var = _check_init(fn, init, x, C)
    x3, m0 = check_state(fn, x, logw, means, var, prior, ("x", "init.logw", "init.means", "init.var"))
    c0 = 0
    if distributed:  # this process's block of chains [c0, c1) (dist imported by the check above)
        W, r = dist.get_world_size(group), dist.get_rank(group)
        c0, c1 = r * C // W, (r + 1) * C // W
        logw, means, var = logw[c0:c1], means[c0:c1], var[c0:c1]
        if x3.shape[0] > 1:
            x3 = x3[c0:c1]
    traces = {"logw": [], "means": [], "var": []} if keep_trace else None
    z = None
    for s in range(n_sweeps):
        z, logw, means, var = sweep(x3, logw, means, var, m0, prior, seed, s, b, c0)
        if keep_trace and s >= burn_in and (s - burn_in) % thin == 0:
            traces["logw"].append(logw)
            traces["means"].append(means)
            traces["var"].append(var)
    if keep_trace:
        traces = {k: torch.stack(v) if v else None for k, v in traces.items()}
    if distributed:
        logw, means, var, z = (_gather_chains(t, C, group) for t in (logw, means, var, z))
        if keep_trace:
            traces = {k: _gather_chains(v, C, group, dim=1) for k, v in traces.items()}
    return GibbsResult(logw, means, var, z, traces)


def _gather_chains(t: Tensor, C: int, group, dim: int = 0) -> Tensor:
    """Every process's block of chains (contiguous blocks r C / W .. (r + 1) C / W along ``dim``), concatenated in
    rank order on every process. Blocks are padded to the largest one for the collective."""
    import torch.distributed as dist

    W = dist.get_world_size(group)
    sizes = [(r + 1) * C // W - r * C // W for r in range(W)]
    pad = list(t.shape)
    pad[dim] = max(sizes) - t.shape[dim]
    tp = torch.cat([t, t.new_zeros(pad)], dim).contiguous() if pad[dim] else t.contiguous()
    parts = [torch.empty_like(tp) for _ in range(W)]
    dist.all_gather(parts, tp, group=group)
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim)


def _check_init(fn: str, init, x: Tensor, C: int):
    """``init`` = (logw, means, var) as tensors on x's device: [C, K], [C, K, D], [C, K, D] or, for every chain,
    [K], [K, D], [K, D]. Returns them in x's dtype, expanded to C chains (their shapes and values are checked with
    the sweep's)."""
    if not isinstance(init, (tuple, list)):
        raise TypeError(f"{fn}: argument 'init' must be a tuple (logw, means, var), got {type(init).__name__}")
    if len(init) != 3:
        raise ValueError(f"{fn}: argument 'init' must be a tuple (logw, means, var), got {len(init)} entries")
    names = ("init.logw", "init.means", "init.var")
    V.tensors(fn, [("x", x)] + list(zip(names, init)), same_dtype=False)
    out = []
    for t, rank in zip(init, (1, 2, 2)):
        t = t.to(x.dtype)
        out.append((t.expand(C, *t.shape) if t.dim() == rank else t).contiguous())
    return tuple(out)
