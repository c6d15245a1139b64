"""The exact epsilon-network of a Gaussian-mixture data law: every sampler measured with no training.

If x_0 ~ sum_k w_k N(mu_k, Sigma_k) and x_t = a_t x_0 + sigma_t eps, then x_t is a Gaussian mixture and
x_0 | x_t is a Gaussian mixture too (docs/methods.md (GMS), written there in 1-D; per dimension
for diagonal covariances):

  r_k  proportional to w_k N(x_t; a_t mu_k, a_t^2 Sigma_k + sigma_t^2 I)
  m_k  = mu_k + a_t v_k (x_t - a_t mu_k) / (sigma_t^2 + a_t^2 v_k),   s_k^2 = v_k sigma_t^2 / (sigma_t^2 + a_t^2 v_k)
  E[x_0^n | x_t] = sum_k r_k {m, m^2 + s^2, m^3 + 3 m s^2}_k        (elementwise, n = 1, 2, 3)

E[eps | x_t] = -sigma_t grad log p_t(x_t) comes from the fused score op; the elementwise moments
E[eps^n | x_t] (the GMS / SN-DDPM heads) follow from eps = (x_t - a_t x_0) / sigma_t and the moments of
x_0 | x_t by the binomial expansion.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import GaussianMixture
from .schedules import Schedule


class MixtureOracle(nn.Module):
    """Exact epsilon-network ``oracle(x, t, cond=None, heads=False)`` for data drawn from ``mixture``.

    ``x`` is [N, *data_shape] with prod(data_shape) == mixture.D; ``t`` a scalar or [N] tensor of times in
    the schedule's units (several distinct times in one batch are allowed). With ``heads=True`` it returns
    ``{"eps": E[eps|x_t], "eps2": E[eps^2|x_t], "eps3": E[eps^3|x_t]}`` (elementwise powers). Computation is
    in the mixture's dtype (use float64 for exactness) and cast back to ``x.dtype``.
    Conditional moments and the higher heads need a 'diag' or 'spherical' mixture; ``eps`` works for 'full'.
    """

    head_names = ("eps", "eps2", "eps3")

    def __init__(self, mixture: GaussianMixture, schedule: Schedule, data_shape: Optional[Sequence[int]] = None,
                 backend: str = "auto"):
        super().__init__()
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"MixtureOracle: expected a GaussianMixture, got {type(mixture).__name__}")
        if len(mixture.batch_shape) != 0:
            raise ValueError("MixtureOracle: the mixture must be unbatched (batch_shape == ())")
        self.mixture = mixture
        self.schedule = schedule
        self.data_shape = tuple(data_shape) if data_shape is not None else (mixture.D,)
        if _prod(self.data_shape) != mixture.D:
            raise ValueError(f"MixtureOracle: data_shape {self.data_shape} does not hold D={mixture.D} values")
        self.backend = backend

    # -- helpers ------------------------------------------------------------------------------
    def _groups(self, x: Tensor, t) -> Tuple[Tensor, list]:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"MixtureOracle: x must be [N, {', '.join(map(str, self.data_shape))}], got {tuple(x.shape)}")
        N = x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float64).detach().cpu()
        if t.dim() == 0:
            t = t.expand(N)
        if t.shape != (N,):
            raise ValueError(f"MixtureOracle: t must be a scalar or a [N={N}] tensor, got shape {tuple(t.shape)}")
        xf = x.reshape(N, -1).to(self.mixture.means.dtype)
        out = []
        for tv in torch.unique(t):
            idx = (t == tv).nonzero().squeeze(1).to(x.device)
            a, s = self.schedule.alpha_sigma(tv)
            if float(s) <= 0:
                raise ValueError("MixtureOracle: sigma_t = 0 (t = 0) has no defined noise prediction")
            out.append((idx, float(a), float(s)))
        return xf, out

    def _scatter(self, N, parts, like: Tensor) -> Tensor:
        if len(parts) == 1:
            return parts[0][1].reshape(like.shape).to(like.dtype)
        res = torch.empty(N, self.mixture.D, dtype=parts[0][1].dtype, device=like.device)
        for idx, val in parts:
            res[idx] = val
        return res.reshape(like.shape).to(like.dtype)

    def x0_moments_flat(self, xf: Tensor, a: float, s: float) -> Tuple[Tensor, Tensor, Tensor]:
        """E[x0^n | x_t] for n = 1, 2, 3 at one (a, sigma): xf [N, D] -> three [N, D] tensors."""
        resp, m, v = self.mixture.posterior_components(xf, a, s, backend=self.backend)
        r = resp.unsqueeze(-1)
        m2 = m * m
        return (r * m).sum(-2), (r * (m2 + v)).sum(-2), (r * (m2 * m + 3 * m * v)).sum(-2)

    # -- public -------------------------------------------------------------------------------
    def forward(self, x: Tensor, t, cond=None, heads: bool = False):
        if cond is not None:
            raise ValueError("MixtureOracle: the oracle is unconditional (cond must be None)")
        xf, groups = self._groups(x, t)
        N = x.shape[0]
        if not heads:
            parts = [(idx, self.mixture.eps(xf[idx], a, s, backend=self.backend)) for idx, a, s in groups]
            return self._scatter(N, parts, x)
        e1p, e2p, e3p = [], [], []
        for idx, a, s in groups:
            xt = xf[idx]
            E1, E2, E3 = self.x0_moments_flat(xt, a, s)
            # eps = (x_t - a x0)/s  =>  E[eps^n] by the binomial expansion in x0
            e1p.append((idx, (xt - a * E1) / s))
            e2p.append((idx, (xt * xt - 2 * a * xt * E1 + a * a * E2) / s**2))
            e3p.append((idx, (xt**3 - 3 * a * xt * xt * E1 + 3 * a * a * xt * E2 - a**3 * E3) / s**3))
        return {"eps": self._scatter(N, e1p, x), "eps2": self._scatter(N, e2p, x), "eps3": self._scatter(N, e3p, x)}

    def x0_moments(self, x: Tensor, t) -> Tuple[Tensor, Tensor, Tensor]:
        """(E[x0|x_t], E[x0^2|x_t], E[x0^3|x_t]) elementwise, each shaped like x."""
        xf, groups = self._groups(x, t)
        parts = ([], [], [])
        for idx, a, s in groups:
            for p, val in zip(parts, self.x0_moments_flat(xf[idx], a, s)):
                p.append((idx, val))
        return tuple(self._scatter(x.shape[0], p, x) for p in parts)

    def posterior_mean(self, x: Tensor, t) -> Tensor:
        """E[x0 | x_t] (Tweedie, from the fused score op)."""
        xf, groups = self._groups(x, t)
        parts = [(idx, self.mixture.posterior_mean(xf[idx], a, s, backend=self.backend)) for idx, a, s in groups]
        return self._scatter(x.shape[0], parts, x)

    def score(self, x: Tensor, t) -> Tensor:
        """grad log p_t(x_t)."""
        xf, groups = self._groups(x, t)
        parts = [(idx, self.mixture.noised_score(xf[idx], a, s, backend=self.backend)) for idx, a, s in groups]
        return self._scatter(x.shape[0], parts, x)

    def sample_data(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n exact draws of x0, shaped [n, *data_shape]."""
        return self.mixture.sample(n, generator=generator).reshape(n, *self.data_shape)


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def heads_dict(out) -> Dict[str, Tensor]:
    """Normalise a network output to a dict of heads (a bare tensor is the 'eps' head)."""
    if isinstance(out, dict):
        return out
    return {"eps": out}
