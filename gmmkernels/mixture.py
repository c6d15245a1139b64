"""GaussianMixture: a (batched) Gaussian mixture as an nn.Module, with the exact diffusion quantities.

The noised law of ``alpha * x0 + sigma * eps`` (x0 from the mixture, eps ~ N(0, I)) is again a Gaussian
mixture, so its score, the ideal denoiser E[x0 | x_t] and the exact noise prediction E[eps | x_t] are all
available in closed form. They are the oracle every diffusion algorithm in this package is tested against.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import _validate as V
from .ops import mixture_stats as _ms

Scalar = Union[float, Tensor]


class GaussianMixture(nn.Module):
    """Mixture sum_k softmax(logits)_k N(means_k, Sigma_k) with Sigma from ``scale`` and ``cov_type``.

    Shapes: logits [..., K], means [..., K, D], scale [..., K, D] ("diag" std), [..., K] ("spherical" std)
    or [..., K, D, D] ("full" lower Cholesky factor). Leading dimensions (``batch_shape``) are independent
    mixtures.

    ``learnable=False`` (default): the three tensors are buffers (they move with ``.to()`` and are saved in the
    ``state_dict``, but no optimizer sees them).

    ``learnable=True``: the mixture is trained by gradient descent (e.g. on ``-log_prob(x).mean()``) with any stock
    optimizer. Its parameters are unconstrained, so no step can make it invalid:

      logits      the log-weights themselves (any real values; the weights are their softmax)
      means       the means themselves
      raw_scale   "diag" / "spherical": log of the standard deviations, scale = exp(raw_scale);
                  "full": a lower-triangular matrix whose diagonal holds the log of the Cholesky factor's diagonal,
                  scale = tril(raw_scale, -1) + diag(exp(diag(raw_scale)))

    In both cases ``gm.logits``, ``gm.means`` and ``gm.scale`` read the mixture's (constrained) values;
    ``gm.scale`` of a learnable mixture is computed from ``raw_scale`` and carries its gradient.
    """

    def __init__(self, logits: Tensor, means: Tensor, scale: Tensor, cov_type: str = "diag", *, learnable: bool = False):
        super().__init__()
        batch, K, D = V.mixture("GaussianMixture", logits, means, scale, cov_type)
        self.learnable = V.flag("GaussianMixture", "learnable", learnable)
        self.cov_type, self.K, self.D = cov_type, K, D
        self.batch_shape = torch.Size(batch)
        if self.learnable:
            self.logits = nn.Parameter(logits.detach().clone())
            self.means = nn.Parameter(means.detach().clone())
            self.raw_scale = nn.Parameter(_unconstrain(scale.detach(), cov_type))
        else:
            self.register_buffer("logits", logits)
            self.register_buffer("means", means)
            self.register_buffer("scale", scale)

    @property
    def scale(self) -> Tensor:
        """Standard deviations ("diag" [..., K, D], "spherical" [..., K]) or Cholesky factors ("full" [..., K, D, D])."""
        if "scale" in self._buffers:
            return self._buffers["scale"]
        return _constrain(self.raw_scale, self.cov_type)

    def extra_repr(self) -> str:
        return f"K={self.K}, D={self.D}, cov_type={self.cov_type!r}, batch_shape={tuple(self.batch_shape)}"

    # -- densities ------------------------------------------------------------------------------
    # Each method checks its own arguments under its own name (GaussianMixture.<method>); the op then checks the
    # mixture's values as usual (see gmmkernels.set_validation).
    def _x(self, fn: str, x) -> Tensor:
        return V.points(fn, "x", x, self.means, self.D)

    def stats(self, x: Tensor, *, with_score: bool = True, with_resp: bool = False, **kw) -> _ms.MixtureStats:
        """log p, score and (optionally) responsibilities at x [..., N, D] in one fused pass
        (:func:`gmmkernels.mixture_stats`; ``backend=`` and ``precision=`` pass through)."""
        x = self._x("GaussianMixture.stats", x)
        return _ms.mixture_stats(x, self.logits, self.means, self.scale, self.cov_type, with_score=with_score,
                                 with_resp=with_resp, **kw)

    def log_prob(self, x: Tensor, **kw) -> Tensor:
        """log p(x) [..., N] at x [..., N, D]."""
        x = self._x("GaussianMixture.log_prob", x)
        return _ms.mixture_log_prob(x, self.logits, self.means, self.scale, self.cov_type, **kw)

    def score(self, x: Tensor, **kw) -> Tensor:
        """grad_x log p(x) [..., N, D]."""
        x = self._x("GaussianMixture.score", x)
        return _ms.mixture_score(x, self.logits, self.means, self.scale, self.cov_type, **kw)

    def responsibilities(self, x: Tensor, **kw) -> Tensor:
        """Posterior component probabilities p(k | x) [..., N, K]."""
        x = self._x("GaussianMixture.responsibilities", x)
        return _ms.mixture_responsibilities(x, self.logits, self.means, self.scale, self.cov_type, **kw)

    forward = log_prob

    @classmethod
    def fit(cls, x: Tensor, n_components: int, cov_type: str = "diag", **kw) -> "GaussianMixture":
        """Fit by EM to x [..., N, D] (one mixture per leading index); see :func:`gmmkernels.fit_em` for options.

        Returns the fitted mixture; call ``gmmkernels.fit_em`` directly for the lower bound, iteration count and
        convergence flags.
        """
        from .fit.em import fit_em  # fit/ builds on this module: imported here, at call time

        try:
            return fit_em(x, n_components, cov_type, **kw).mixture
        except (TypeError, ValueError) as e:  # fit_em's checks, reported under this method's name
            if not str(e).startswith("fit_em:"):
                raise
            raise type(e)("GaussianMixture.fit:" + str(e)[len("fit_em:"):]) from None

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
    def sample(self, sample_shape: Union[int, Sequence[int]] = torch.Size(), generator: Optional[torch.Generator] = None) -> Tensor:
        """Draws: a component index per draw, then a draw from that component only (no gradient).

        ``sample(n)`` with an int returns [..., n, D] (batch first: the [..., N, D] layout the ops take);
        ``sample(shape)`` with a tuple or torch.Size returns [*shape, ..., D], and ``sample()`` one draw [..., D],
        as torch.distributions does.
        """
        fn = "GaussianMixture.sample"
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{fn}: argument 'generator' must be a torch.Generator or None, got {type(generator).__name__}")
        if isinstance(sample_shape, (tuple, list, torch.Size)):
            shape = torch.Size(V.integer(fn, "sample_shape", s, lo=0, what="a sequence of non-negative ints")
                               for s in sample_shape)
            out = self._draw(math.prod(shape), generator)  # [..., n, D]
            nb = len(self.batch_shape)
            out = out.reshape(*self.batch_shape, *shape, self.D)
            return out.movedim(tuple(range(nb)), tuple(range(len(shape), len(shape) + nb))).contiguous()
        n = V.integer(fn, "sample_shape", sample_shape, lo=0, what="a non-negative int or a shape (tuple of ints)")
        return self._draw(n, generator)

    def _draw(self, n: int, generator: Optional[torch.Generator]) -> Tensor:
        """n draws [..., n, D]."""
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
    def _coef(self, fn: str, name: str, c: Scalar, *, nonneg: bool = False) -> Tensor:
        """A scalar or a tensor that broadcasts to batch_shape, finite (and >= 0 when ``nonneg``), as a tensor."""
        if isinstance(c, Tensor):
            V.tensor(fn, name, c, floating=False)
            ok = c.dim() <= len(self.batch_shape)
            try:
                torch.broadcast_shapes(c.shape, self.batch_shape)
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(f"{fn}: argument '{name}' must be a scalar or broadcast to batch_shape "
                                 f"{tuple(self.batch_shape)}, got shape {tuple(c.shape)}")
            c = c.to(device=self.means.device, dtype=self.means.dtype)  # e.g. a schedule's float64 CPU tensor
            (V.nonnegative if nonneg else V.finite)(fn, name, c)
            return c
        V.number(fn, name, c, lo=0.0 if nonneg else None)
        return torch.tensor(float(c), dtype=self.means.dtype, device=self.means.device)

    def _alpha_sigma(self, fn: str, alpha: Scalar, sigma: Scalar):
        a, s = self._coef(fn, "alpha", alpha), self._coef(fn, "sigma", sigma, nonneg=True)
        if isinstance(alpha, Tensor) or isinstance(sigma, Tensor):  # a value check (reads tensor data)
            both_zero = V.values_enabled() and V.has_data(a) and V.has_data(s) and bool(((a == 0) & (s == 0)).any())
        else:  # Python numbers: no tensor read
            both_zero = float(alpha) == 0 and float(sigma) == 0
        if both_zero:
            raise ValueError(f"{fn}: arguments 'alpha' and 'sigma' are both 0 (the noised law would be a point mass)")
        return a, s

    def noised(self, alpha: Scalar, sigma: Scalar) -> "GaussianMixture":
        """The law of alpha * x0 + sigma * eps, eps ~ N(0, I): a mixture with means alpha*mu_k and
        covariances alpha^2 Sigma_k + sigma^2 I. alpha (finite) and sigma (>= 0, finite) are scalars or tensors that
        broadcast to batch_shape, not both 0. The result is not learnable; it stays differentiable in this one."""
        return self._noised("GaussianMixture.noised", alpha, sigma)

    def _noised(self, fn: str, alpha: Scalar, sigma: Scalar) -> "GaussianMixture":
        a, s = self._alpha_sigma(fn, alpha, sigma)
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
        fn = "GaussianMixture.noised_score"
        return self._noised(fn, alpha, sigma).score(V.points(fn, "x_t", x_t, self.means, self.D), **kw)

    def eps(self, x_t: Tensor, alpha: Scalar, sigma: Scalar, **kw) -> Tensor:
        """Exact noise prediction E[eps | x_t] = -sigma * grad log p_t(x_t) (the ideal epsilon-network)."""
        fn = "GaussianMixture.eps"
        x_t = V.points(fn, "x_t", x_t, self.means, self.D)
        s = self._coef(fn, "sigma", sigma, nonneg=True)
        return -s[..., None, None] * self._noised(fn, alpha, sigma).score(x_t, **kw)

    def posterior_mean(self, x_t: Tensor, alpha: Scalar, sigma: Scalar, **kw) -> Tensor:
        """Exact E[x0 | x_t] by Tweedie's formula: (x_t + sigma^2 grad log p_t(x_t)) / alpha (the ideal denoiser).
        alpha must be non-zero (at alpha = 0, x_t carries no information about x0)."""
        fn = "GaussianMixture.posterior_mean"
        x_t = V.points(fn, "x_t", x_t, self.means, self.D)
        a, s = self._alpha_sigma(fn, alpha, sigma)
        V.nonzero(fn, "alpha", alpha if not isinstance(alpha, Tensor) else a)
        return (x_t + (s**2)[..., None, None] * self._noised(fn, alpha, sigma).score(x_t, **kw)) / a[..., None, None]

    def posterior_components(self, x_t: Tensor, alpha: Scalar, sigma: Scalar, **kw):
        """x0 | x_t as a mixture (diag/spherical): (resp [..., N, K], mean [..., N, K, D], var [..., N, K, D]).

        resp are the responsibilities of the noised mixture at x_t; component k's posterior is
        N(mu_k + alpha v_k (x_t - alpha mu_k) / (sigma^2 + alpha^2 v_k), v_k sigma^2 / (sigma^2 + alpha^2 v_k)), v_k = scale_k^2.
        Materialises N x K x D: meant for oracles and tests.
        """
        fn = "GaussianMixture.posterior_components"
        if self.cov_type == "full":
            raise NotImplementedError(f"{fn}: only for 'diag' and 'spherical' mixtures")
        x_t = V.points(fn, "x_t", x_t, self.means, self.D)
        a, s = self._alpha_sigma(fn, alpha, sigma)
        resp = self._noised(fn, alpha, sigma).responsibilities(x_t, **kw)
        v = self.scale**2 if self.cov_type == "diag" else (self.scale**2).unsqueeze(-1).expand(*self.scale.shape, self.D)
        a3, s3 = a[..., None, None], s[..., None, None]
        denom = s3**2 + a3**2 * v  # [..., K, D]
        mean = self.means.unsqueeze(-3) + (a3 * v / denom).unsqueeze(-3) * (x_t.unsqueeze(-2) - (a3 * self.means).unsqueeze(-3))
        var = (v * s3**2 / denom).unsqueeze(-3).expand_as(mean)
        return resp, mean, var


def _unconstrain(scale: Tensor, cov_type: str) -> Tensor:
    """The unconstrained parameter of a valid ``scale`` (inverse of :func:`_constrain`)."""
    if cov_type != "full":
        return scale.log()
    d = torch.diagonal(scale, dim1=-2, dim2=-1)
    return torch.tril(scale, -1) + torch.diag_embed(d.log())


def _constrain(raw: Tensor, cov_type: str) -> Tensor:
    """``scale`` from its unconstrained parameter: exp for standard deviations; for a Cholesky factor the strict
    lower triangle as is and exp of the diagonal (so it is always lower-triangular with a positive diagonal)."""
    if cov_type != "full":
        return raw.exp()
    return torch.tril(raw, -1) + torch.diag_embed(torch.diagonal(raw, dim1=-2, dim2=-1).exp())
