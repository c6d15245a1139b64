"""A ``torch.distributions.Distribution`` for (batched) Gaussian mixtures whose densities run the fused kernels.

:class:`MixtureOfGaussians` is the distribution of ``MixtureSameFamily(Categorical(logits), Independent(Normal(loc,
scale), 1))`` ("diag"), of the same with one scale per component ("spherical"), or of
``MixtureSameFamily(Categorical(logits), MultivariateNormal(loc, scale_tril=L))`` ("full"), with the interface of
torch's distributions (``batch_shape`` / ``event_shape``, ``sample``, ``mean``, ``variance``, ``expand``, ``support``,
``arg_constraints``, ``validate_args``), but ``log_prob`` is ONE call of the fused mixture kernel
(:func:`gmmkernels.mixture_log_prob`: no N x K x D intermediate, autograd to the value and to every parameter),
and ``score`` (the gradient of log p with respect to the value) and ``responsibilities`` come from the same kernel.

There is no ``rsample``: a mixture draw picks a discrete component, so it is not reparameterisable (``has_rsample``
is False, as for ``MixtureSameFamily``); the entropy has no closed form.

Pyro: ``PyroMixtureOfGaussians`` (this module's attribute, created on first use; needs ``pip install
gmmkernels[pyro]``) is the same distribution with Pyro's distribution mixin, so it can be a ``pyro.sample`` site.
Guide: docs/integrations/distributions.md.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints

from .. import _validate as V
from .. import mixture_log_prob, mixture_responsibilities, mixture_score

__all__ = ["MixtureOfGaussians", "PyroMixtureOfGaussians"]

_EVENT_DIMS = {"diag": 2, "spherical": 1, "full": 3}  # trailing dims of the scale parameter per mixture


class MixtureOfGaussians(Distribution):
    """sum_k w_k N(loc_k, Sigma_k) over R^D, batched; w = softmax(logits) (or ``probs``).

    Args:
      loc: component means [..., K, D].
      scale: "diag": standard deviations [..., K, D]; "spherical": one standard deviation per component [..., K].
      scale_tril: "full": lower Cholesky factors of the covariances [..., K, D, D] (instead of ``scale``).
      logits / probs: mixture weights [..., K] (exactly one of the two).
      cov_type: "diag" | "spherical" | "full"; default "full" with ``scale_tril``, else "diag".
      backend: backend of the fused kernels ("auto", "reference", "cpu", "cuda", "triton").
      validate_args: as torch's distributions.
    ``batch_shape`` is the broadcast of the parameters' leading dimensions, ``event_shape`` is (D,).
    """

    has_rsample = False
    support = constraints.real_vector

    def __init__(self, loc: Tensor, scale: Optional[Tensor] = None, *, scale_tril: Optional[Tensor] = None,
                 logits: Optional[Tensor] = None, probs: Optional[Tensor] = None, cov_type: Optional[str] = None,
                 backend: str = "auto", validate_args: Optional[bool] = None):
        fn = "MixtureOfGaussians"
        if (logits is None) == (probs is None):
            raise ValueError(f"{fn}: pass exactly one of the arguments 'logits' and 'probs'")
        if (scale is None) == (scale_tril is None):
            raise ValueError(f"{fn}: pass exactly one of the arguments 'scale' and 'scale_tril'")
        if cov_type is None:
            cov_type = "full" if scale_tril is not None else "diag"
        V.choice(fn, "cov_type", cov_type, ("diag", "spherical", "full"))
        if (cov_type == "full") != (scale_tril is not None):
            raise ValueError(f"{fn}: cov_type={cov_type!r} takes " +
                             ("'scale_tril'" if cov_type == "full" else "'scale', not 'scale_tril'"))
        self.cov_type, self.backend = cov_type, backend
        self.loc = loc
        if logits is not None:
            self.logits = logits
        else:
            self.probs = probs
        if scale_tril is not None:
            self.scale_tril = scale_tril
        else:
            self.scale = scale
        w = logits if logits is not None else probs
        sc = scale_tril if scale_tril is not None else scale
        V.tensors(fn, [("loc", loc), ("logits" if logits is not None else "probs", w),
                       ("scale_tril" if scale_tril is not None else "scale", sc)])
        if loc.dim() < 2:
            raise ValueError(f"{fn}: argument 'loc' must have shape [..., K, D], got {tuple(loc.shape)}")
        K, D = loc.shape[-2:]
        ne = _EVENT_DIMS[cov_type]
        want = {"diag": (K, D), "spherical": (K,), "full": (K, D, D)}[cov_type]
        name = "scale_tril" if cov_type == "full" else "scale"
        if sc.dim() < ne or tuple(sc.shape[sc.dim() - ne:]) != want:
            raise ValueError(f"{fn}: argument '{name}' for cov_type={cov_type!r} must have shape [..., "
                             f"{', '.join(map(str, want))}], got {tuple(sc.shape)}")
        if w.dim() < 1 or w.shape[-1] != K:
            raise ValueError(f"{fn}: argument '{'logits' if logits is not None else 'probs'}' must have shape "
                             f"[..., K={K}], got {tuple(w.shape)}")
        try:
            batch = torch.broadcast_shapes(w.shape[:-1], loc.shape[:-2], sc.shape[:sc.dim() - ne])
        except RuntimeError as e:
            raise ValueError(f"{fn}: the leading (batch) dimensions of the parameters do not broadcast: {e}") from None
        self._K, self._D = K, D
        super().__init__(batch_shape=batch, event_shape=torch.Size((D,)), validate_args=validate_args)

    # -- parameters ------------------------------------------------------------------------------------------
    @property
    def arg_constraints(self) -> dict:
        c = {"loc": constraints.independent(constraints.real, 2)}
        if "logits" in self.__dict__:
            c["logits"] = constraints.independent(constraints.real, 1)
        else:
            c["probs"] = constraints.simplex
        if self.cov_type == "full":
            c["scale_tril"] = constraints.independent(constraints.lower_cholesky, 1)
        else:
            c["scale"] = constraints.independent(constraints.positive, _EVENT_DIMS[self.cov_type])
        return c

    @property
    def mixture_logits(self) -> Tensor:
        """Log-weights [..., K] (normalised when built from ``probs``)."""
        if "logits" in self.__dict__:
            return self.logits
        return torch.log(self.probs.clamp_min(torch.finfo(self.probs.dtype).tiny))

    @property
    def mixture_probs(self) -> Tensor:
        """Weights [..., K]."""
        if "probs" in self.__dict__:
            return self.probs
        return torch.softmax(self.logits, -1)

    @property
    def _scale_param(self) -> Tensor:
        return self.scale_tril if self.cov_type == "full" else self.scale

    def _component_var(self) -> Tensor:
        """Per-component variances of each coordinate [..., K, D]."""
        if self.cov_type == "full":
            return (self.scale_tril**2).sum(-1)
        if self.cov_type == "diag":
            return self.scale**2
        return (self.scale**2).unsqueeze(-1).expand(*self.scale.shape, self._D)

    @property
    def mean(self) -> Tensor:
        w = self.mixture_probs.unsqueeze(-1)
        return (w * self.loc).sum(-2).expand(*self.batch_shape, self._D)

    @property
    def variance(self) -> Tensor:
        w = self.mixture_probs.unsqueeze(-1)
        second = (w * (self._component_var() + self.loc**2)).sum(-2)
        return (second - self.mean**2).clamp_min(0).expand(*self.batch_shape, self._D)

    @property
    def component_distribution(self) -> Distribution:
        """The components as a torch distribution (batch [..., K], event [D])."""
        from torch.distributions import Independent, MultivariateNormal, Normal

        if self.cov_type == "full":
            return MultivariateNormal(self.loc, scale_tril=self.scale_tril, validate_args=False)
        s = self.scale if self.cov_type == "diag" else self.scale.unsqueeze(-1).expand(*self.scale.shape, self._D)
        return Independent(Normal(self.loc, s, validate_args=False), 1, validate_args=False)

    @property
    def mixture_distribution(self) -> Categorical:
        return Categorical(logits=self.mixture_logits, validate_args=False)

    # -- torch.distributions interface -----------------------------------------------------------------------
    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MixtureOfGaussians, _instance)
        batch_shape = torch.Size(batch_shape)
        K, D = self._K, self._D
        new.cov_type, new.backend, new._K, new._D = self.cov_type, self.backend, K, D
        new.loc = self.loc.expand(*batch_shape, K, D)
        if "logits" in self.__dict__:
            new.logits = self.logits.expand(*batch_shape, K)
        else:
            new.probs = self.probs.expand(*batch_shape, K)
        tail = {"diag": (K, D), "spherical": (K,), "full": (K, D, D)}[self.cov_type]
        if self.cov_type == "full":
            new.scale_tril = self.scale_tril.expand(*batch_shape, *tail)
        else:
            new.scale = self.scale.expand(*batch_shape, *tail)
        super(MixtureOfGaussians, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _points(self, value: Tensor):
        """value [*S, *batch, D] (broadcast) -> (x [*batch, n, D], S): the sample dimensions become the kernel's
        point axis, so one kernel call covers every sample of every mixture of the batch."""
        if self._validate_args:
            self._validate_sample(value)
        nb = len(self.batch_shape)
        shape = torch.broadcast_shapes(value.shape, self.batch_shape + self.event_shape)
        S = shape[: len(shape) - nb - 1]
        x = value.expand(shape).reshape(math.prod(S), *self.batch_shape, self._D)
        return x.movedim(0, -2), S

    def _unpoint(self, out: Tensor, S, trailing: int) -> Tensor:
        """Kernel output [*batch, n, *tail] -> [*S, *batch, *tail]."""
        out = out.movedim(-1 - trailing, 0)
        return out.reshape(*S, *out.shape[1:])

    def _kernel_args(self):
        return self.mixture_logits, self.loc, self._scale_param, self.cov_type

    def log_prob(self, value: Tensor) -> Tensor:
        """log p(value), shape sample_shape + batch_shape: one fused kernel call, differentiable."""
        x, S = self._points(value)
        return self._unpoint(mixture_log_prob(x, *self._kernel_args(), backend=self.backend), S, 0)

    def score(self, value: Tensor) -> Tensor:
        """The score grad_value log p(value), shape of the broadcast value (fused kernel, closed form)."""
        x, S = self._points(value)
        return self._unpoint(mixture_score(x, *self._kernel_args(), backend=self.backend), S, 1)

    def responsibilities(self, value: Tensor) -> Tensor:
        """p(component k | value), shape sample_shape + batch_shape + (K,)."""
        x, S = self._points(value)
        return self._unpoint(mixture_responsibilities(x, *self._kernel_args(), backend=self.backend), S, 1)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """Draws of shape sample_shape + batch_shape + (D,): a component per draw, then that component's Gaussian
        (torch's global generator, as torch's distributions)."""
        sample_shape = torch.Size(sample_shape)
        K, D = self._K, self._D
        with torch.no_grad():
            idx = self.mixture_distribution.sample(sample_shape)  # [*S, *batch]
            full = sample_shape + self.batch_shape
            loc = self.loc.expand(*self.batch_shape, K, D).expand(*full, K, D)
            pick = idx[..., None, None]
            mu = torch.gather(loc, -2, pick.expand(*full, 1, D)).squeeze(-2)
            eps = torch.randn(*full, D, dtype=mu.dtype, device=mu.device)
            if self.cov_type == "full":
                L = self.scale_tril.expand(*self.batch_shape, K, D, D).expand(*full, K, D, D)
                Lk = torch.gather(L, -3, pick[..., None].expand(*full, 1, D, D)).squeeze(-3)
                return mu + (Lk @ eps.unsqueeze(-1)).squeeze(-1)
            s = self._component_var().sqrt().expand(*self.batch_shape, K, D).expand(*full, K, D)
            return mu + torch.gather(s, -2, pick.expand(*full, 1, D)).squeeze(-2) * eps

    def __repr__(self) -> str:
        return (f"MixtureOfGaussians(K={self._K}, D={self._D}, cov_type={self.cov_type!r}, "
                f"batch_shape={tuple(self.batch_shape)})")


_PYRO_CLASS = None


def _pyro_class():
    global _PYRO_CLASS
    if _PYRO_CLASS is None:
        from . import require

        mixin = require("pyro.distributions.torch_distribution", "distributions (Pyro)", "pyro").TorchDistributionMixin

        class PyroMixtureOfGaussians(MixtureOfGaussians, mixin):
            """:class:`MixtureOfGaussians` with Pyro's distribution mixin: usable as a ``pyro.sample`` site
            (``to_event``, ``expand_by``, ``mask``, plates)."""

        PyroMixtureOfGaussians.__module__ = __name__
        PyroMixtureOfGaussians.__qualname__ = "PyroMixtureOfGaussians"
        _PYRO_CLASS = PyroMixtureOfGaussians
    return _PYRO_CLASS


def __getattr__(name: str):
    if name == "PyroMixtureOfGaussians":
        return _pyro_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
