"""GaussianMixture: a (batched) Gaussian mixture as an nn.Module, with the exact diffusion quantities.

The noised law of ``alpha * x0 + sigma * eps`` (x0 from the mixture, eps ~ N(0, I)) is again a Gaussian
mixture, so its score, the ideal denoiser E[x0 | x_t] and the exact noise prediction E[eps | x_t] are all
available in closed form. They are the oracle every diffusion algorithm in this package is tested against.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from . import _validate as V
from .ops import mixture_stats as _ms

Scalar = Union[float, Tensor]


class GaussianMixture(nn.Module):
    """Mixture sum_k softmax(logits)_k N(means_k, Sigma_k) with Sigma from ``scale`` and ``cov_type``.

    Shapes: logits [..., K], means [..., K, D], scale [..., K, D] ("diag" std), [..., K] ("spherical" std)
    or [..., K, D, D] ("full" lower Cholesky factor). Leading dimensions (``batch_shape``) are independent
    mixtures. With ``learnable=True`` the tensors are Parameters (fit them by gradient descent on
    ``-log_prob(x).mean()``); otherwise buffers.
    """

    def __init__(self, logits: Tensor, means: Tensor, scale: Tensor, cov_type: str = "diag", *, learnable: bool = False):
        super().__init__()
        batch, K, D = V.mixture("GaussianMixture", logits, means, scale, cov_type)
        self.cov_type, self.K, self.D = cov_type, K, D
        self.batch_shape = torch.Size(batch)
        reg = (lambda n, t: self.register_parameter(n, nn.Parameter(t))) if learnable else self.register_buffer
        reg("logits", logits)
        reg("means", means)
        reg("scale", scale)

    def extra_repr(self) -> str:
        return f"K={self.K}, D={self.D}, cov_type={self.cov_type!r}, batch_shape={tuple(self.batch_shape)}"

    # -- densities ------------------------------------------------------------------------------
    def stats(self, x: Tensor, *, with_score: bool = True, with_resp: bool = False, **kw) -> _ms.MixtureStats:
        return _ms.mixture_stats(x, self.logits, self.means, self.scale, self.cov_type, with_score=with_score,
                                 with_resp=with_resp, **kw)

    def log_prob(self, x: Tensor, **kw) -> Tensor:
        return _ms.mixture_log_prob(x, self.logits, self.means, self.scale, self.cov_type, **kw)

    def score(self, x: Tensor, **kw) -> Tensor:
        return _ms.mixture_score(x, self.logits, self.means, self.scale, self.cov_type, **kw)

    def responsibilities(self, x: Tensor, **kw) -> Tensor:
        return _ms.mixture_responsibilities(x, self.logits, self.means, self.scale, self.cov_type, **kw)

    forward = log_prob

    @classmethod
    def fit(cls, x: Tensor, n_components: int, cov_type: str = "diag", **kw) -> "GaussianMixture":
        """Fit by EM to x [..., N, D] (one mixture per leading index); see :func:`gmmkernels.fit_em` for options.

        Returns the fitted mixture; call ``gmmkernels.fit_em`` directly for the lower bound, iteration count and
        convergence flags.
        """
        from .fit.em import fit_em  # fit/ builds on this module: imported here, at call time

        return fit_em(x, n_components, cov_type, **kw).mixture

    @property
    def weights(self) -> Tensor:
        return torch.softmax(self.logits, -1)

    def covariance(self) -> Tensor:
        """Covariance matrices [..., K, D, D]."""
        if self.cov_type == "full":
            return self.scale @ self.scale.transpose(-1, -2)
        var = self.scale**2 if self.cov_type == "diag" else (self.scale**2).unsqueeze(-1).expand(*self.scale.shape, self.D)
        return torch.diag_embed(var)

    def mean(self) -> Tensor:
        """Mixture mean [..., D]."""
        return (self.weights.unsqueeze(-1) * self.means).sum(-2)

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n draws [..., n, D]: a component index per draw, then a draw from that component only."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"GaussianMixture.sample: n must be a non-negative int, got {n!r}")
        batch, K, D = self.batch_shape, self.K, self.D
        B = math.prod(batch)
        dev, dt = self.means.device, self.means.dtype
        w = self.weights.expand(*batch, K).reshape(B, K)
        idx = torch.multinomial(w.float(), n, replacement=True, generator=generator) if n else torch.zeros(B, 0, dtype=torch.long, device=dev)
        eps = torch.randn(B, n, D, generator=generator, device=dev, dtype=dt)
        mu = self.means.expand(*batch, K, D).reshape(B, K, D)
        out = torch.gather(mu, 1, idx.unsqueeze(-1).expand(B, n, D))
        if self.cov_type == "full":
            L = self.scale.expand(*batch, K, D, D).reshape(B, K, D, D)
            Ls = L[torch.arange(B, device=dev).unsqueeze(1), idx]  # [B, n, D, D]
            out = out + (Ls @ eps.unsqueeze(-1)).squeeze(-1)
        else:
            s = self.scale if self.cov_type == "diag" else self.scale.unsqueeze(-1).expand(*self.scale.shape, D)
            s = s.expand(*batch, K, D).reshape(B, K, D)
            out = out + torch.gather(s, 1, idx.unsqueeze(-1).expand(B, n, D)) * eps
        return out.reshape(*batch, n, D)

    # -- diffusion ------------------------------------------------------------------------------
    def _coef(self, c: Scalar, name: str) -> Tensor:
        c = torch.as_tensor(c, dtype=self.means.dtype, device=self.means.device)
        if c.dim() > len(self.batch_shape):
            raise ValueError(f"GaussianMixture: '{name}' must be a scalar or broadcast to batch_shape {tuple(self.batch_shape)}")
        return c

    def noised(self, alpha: Scalar, sigma: Scalar) -> "GaussianMixture":
        """The law of alpha * x0 + sigma * eps, eps ~ N(0, I): a mixture with means alpha*mu_k and
        covariances alpha^2 Sigma_k + sigma^2 I. alpha and sigma are scalars or tensors of batch shape."""
        a, s = self._coef(alpha, "alpha"), self._coef(sigma, "sigma")
        if self.cov_type == "full":
            a2 = a[..., None, None, None]
            s2 = s[..., None, None, None]
            cov = a2**2 * (self.scale @ self.scale.transpose(-1, -2)) + s2**2 * torch.eye(self.D, dtype=self.scale.dtype, device=self.scale.device)
            scale = torch.linalg.cholesky(cov)
        elif self.cov_type == "diag":
            scale = torch.sqrt((a[..., None, None] * self.scale) ** 2 + s[..., None, None] ** 2)
        else:
            scale = torch.sqrt((a[..., None] * self.scale) ** 2 + s[..., None] ** 2)
        means = a[..., None, None] * self.means
        logits = self.logits.expand(*torch.broadcast_shapes(self.logits.shape, a.shape + (1,)))
        return GaussianMixture(logits, means, scale, self.cov_type)

    def noised_score(self, x_t: Tensor, alpha: Scalar, sigma: Scalar, **kw) -> Tensor:
        """Exact score grad log p_t(x_t) of the noised mixture."""
        return self.noised(alpha, sigma).score(x_t, **kw)

    def eps(self, x_t: Tensor, alpha: Scalar, sigma: Scalar, **kw) -> Tensor:
        """Exact noise prediction E[eps | x_t] = -sigma * grad log p_t(x_t) (the ideal epsilon-network)."""
        s = self._coef(sigma, "sigma")
        return -s[..., None, None] * self.noised_score(x_t, alpha, sigma, **kw)

    def posterior_mean(self, x_t: Tensor, alpha: Scalar, sigma: Scalar, **kw) -> Tensor:
        """Exact E[x0 | x_t] by Tweedie's formula: (x_t + sigma^2 grad log p_t(x_t)) / alpha (the ideal denoiser)."""
        a, s = self._coef(alpha, "alpha"), self._coef(sigma, "sigma")
        return (x_t + (s**2)[..., None, None] * self.noised_score(x_t, alpha, sigma, **kw)) / a[..., None, None]

    def posterior_components(self, x_t: Tensor, alpha: Scalar, sigma: Scalar, **kw):
        """x0 | x_t as a mixture (diag/spherical): (resp [..., N, K], mean [..., N, K, D], var [..., N, K, D]).

        resp are the responsibilities of the noised mixture at x_t; component k's posterior is
        N(mu_k + alpha v_k (x_t - alpha mu_k) / (sigma^2 + alpha^2 v_k), v_k sigma^2 / (sigma^2 + alpha^2 v_k)), v_k = scale_k^2.
        Materialises N x K x D: meant for oracles and tests.
        """
        if self.cov_type == "full":
            raise NotImplementedError("GaussianMixture.posterior_components: only for 'diag' and 'spherical' mixtures")
        a, s = self._coef(alpha, "alpha"), self._coef(sigma, "sigma")
        resp = self.noised(alpha, sigma).responsibilities(x_t, **kw)
        v = self.scale**2 if self.cov_type == "diag" else (self.scale**2).unsqueeze(-1).expand(*self.scale.shape, self.D)
        a3, s3 = a[..., None, None], s[..., None, None]
        denom = s3**2 + a3**2 * v  # [..., K, D]
        mean = self.means.unsqueeze(-3) + (a3 * v / denom).unsqueeze(-3) * (x_t.unsqueeze(-2) - (a3 * self.means).unsqueeze(-3))
        var = (v * s3**2 / denom).unsqueeze(-3).expand_as(mean)
        return resp, mean, var
