"""Public op: one sweep of the Gibbs sampler of a conjugate diagonal Bayesian Gaussian mixture over many chains.

    gibbs_sweep(x, logw, means, var, prior, *, seed, step, backend="auto") -> (z, logw, means, var)

The model (GibbsPrior): w ~ Dir(alpha 1_K); var_kd ~ InvGamma(a0, b0); mu_kd | var_kd ~ N(m0_d, var_kd / kappa0);
x_n | z_n = k ~ N(mu_k, diag(var_k)). One sweep draws z | params for every point, then (w, mu, var) | z, x from their
conjugate posteriors; the native kernels do it for C chains in one launch, with counter-based random numbers keyed by
(seed, chain, step), so the same (seed, step) gives the same draws. Equations: docs/kernels.md (gibbs_sweep).
The ``gibbs`` algorithm (gmmkernels/fit/gibbs.py) runs many sweeps.

backend: "auto" | "reference" (eager torch ops, torch's global generator: same law, other numbers) | "cpu" | "cuda".
Dtypes: float32 and float64. Not differentiable (a sampler).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .. import _backend, _dispatch
from .. import _validate as V
from ..reference import gibbs_sweep as _ref


class GibbsPrior(NamedTuple):
    """Conjugate prior: w ~ Dir(alpha 1_K); var_kd ~ InvGamma(a0, b0); mu_kd | var_kd ~ N(m0_d, var_kd / kappa0)."""

    alpha: float = 1.0
    kappa0: float = 0.01
    a0: float = 1.0
    b0: float = 1.0
    m0: Optional[Tensor] = None  # [D]; None: zeros


def check_prior(fn: str, prior) -> GibbsPrior:
    """A GibbsPrior with positive finite alpha, kappa0, a0, b0 (and m0 None or a tensor / sequence)."""
    if not isinstance(prior, GibbsPrior):
        raise TypeError(f"{fn}: argument 'prior' must be a GibbsPrior, got {type(prior).__name__}")
    for name in ("alpha", "kappa0", "a0", "b0"):
        V.number(fn, f"prior.{name}", getattr(prior, name), lo=0.0, lo_open=True,
                 what="a positive finite number (prior alpha, kappa0, a0, b0 must be positive)")
    if prior.m0 is not None and (isinstance(prior.m0, (str, bytes)) or not isinstance(prior.m0, (Tensor, Sequence))):
        raise TypeError(f"{fn}: argument 'prior.m0' must be None, a tensor or a sequence of D numbers, got "
                        f"{type(prior.m0).__name__}")
    return prior


def check_state(fn: str, x, logw, means, var, prior, names: Tuple[str, str, str, str] = ("x", "logw", "means", "var")):
    """The checks of one sweep's inputs (``names``: how the message calls x, logw, means, var). Returns
    (x [1 or C, N, D], m0 [D] in x's dtype and device)."""
    nx, nl, nm, nv = names
    V.tensors(fn, [(nx, x), (nl, logw), (nm, means), (nv, var)])
    prior = check_prior(fn, prior)
    if x.dim() not in (2, 3):
        raise ValueError(f"{fn}: argument '{nx}' must have shape [N, D] or [C, N, D], got {list(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{fn}: argument '{nx}' must be float32 or float64, got {x.dtype}")
    if logw.dim() != 2:
        raise ValueError(f"{fn}: argument '{nl}' must have shape [C, K], got {list(logw.shape)}")
    C, K = logw.shape
    D = x.shape[-1]
    V.shape(fn, nm, means, (C, K, D), "[C, K, D]")
    V.shape(fn, nv, var, (C, K, D), "[C, K, D]")
    x = x if x.dim() == 3 else x.unsqueeze(0)
    if x.shape[0] not in (1, C):
        raise ValueError(f"{fn}: argument '{nx}' has {x.shape[0]} data sets but '{nl}' has C={C} chains")
    m0 = prior.m0
    if isinstance(m0, Tensor):
        V.tensors(fn, [(nx, x), ("prior.m0", m0)], same_dtype=False)
    try:
        m0 = torch.zeros(D, dtype=x.dtype, device=x.device) if m0 is None else torch.as_tensor(
            m0, dtype=x.dtype, device=x.device).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{fn}: argument 'prior.m0' must be a tensor or a sequence of D numbers ({e})") from None
    if m0.numel() != D:
        raise ValueError(f"{fn}: argument 'prior.m0' must have D={D} entries, got {m0.numel()}")
    V.finite(fn, "prior.m0", m0)
    V.finite(fn, nx, x)
    V.log_weights(fn, nl, logw)
    V.finite(fn, nm, means)
    V.positive(fn, nv, var)
    return x, m0


def gibbs_sweep(x: Tensor, logw: Tensor, means: Tensor, var: Tensor, prior: GibbsPrior, *, seed: int, step: int,
                chain0: int = 0, backend: str = "auto"):
    """One sweep of C chains in one launch. x [N, D] (shared by all chains) or [C, N, D]; logw [C, K];
    means, var [C, K, D]. Returns (z [C, N] int32, logw, means, var). Same (seed, step) -> same draws.
    ``chain0``: chain c draws the random streams of chain chain0 + c, so a shard of chains [chain0, chain0 + C) of a
    larger run draws what that run draws for them. backend 'reference' uses torch's global generator instead of the
    counter-based streams."""
    fn = "gibbs_sweep"
    x, m0 = check_state(fn, x, logw, means, var, prior)
    seed = V.seed(fn, "seed", seed)
    step = V.integer(fn, "step", step, lo=0, hi=(1 << 32) - 1)
    chain0 = V.integer(fn, "chain0", chain0, lo=0, hi=(1 << 62), what="an int in [0, 2^62]")
    b = _dispatch.select(fn, "gibbs_sweep", backend, x.device, x.dtype)
    return sweep(x, logw, means, var, m0, prior, seed, step, b, chain0)


def sweep(x: Tensor, logw: Tensor, means: Tensor, var: Tensor, m0: Tensor, prior: GibbsPrior, seed: int, step: int,
          backend: str, chain0: int = 0):
    """The sweep itself, on arguments already checked (x [1 or C, N, D], m0 [D], a resolved backend): what
    :func:`gibbs_sweep` runs, and what ``gibbs`` calls every sweep after checking its inputs once."""
    if backend == "reference":
        z, lw, mu, v = _ref.gibbs_sweep_ref(x, logw, means, var, m0, prior.alpha, prior.kappa0, prior.a0, prior.b0)
        return z.to(torch.int32), lw, mu, v
    seed = ((seed + (1 << 63)) % (1 << 64)) - (1 << 63)  # the same 64 bits as a signed int64
    return torch.ops.gmmkernels.gibbs_sweep(x.contiguous(), logw.contiguous(), means.contiguous(), var.contiguous(), m0,
                                            float(prior.alpha), float(prior.kappa0), float(prior.a0), float(prior.b0),
                                            seed, step, chain0)


# ----------------------------------------------------------------------------------------------------------
# fake kernel of the native op


if _backend.has_schema("gibbs_sweep"):

    @torch.library.register_fake("gmmkernels::gibbs_sweep")
    def _gibbs_sweep_fake(x, logw, means, var, m0, alpha, kappa0, a0, b0, seed, step, chain0=0):
        B = logw.shape[0]
        return x.new_empty((B, x.shape[1]), dtype=torch.int32), torch.empty_like(logw), torch.empty_like(means), torch.empty_like(var)
