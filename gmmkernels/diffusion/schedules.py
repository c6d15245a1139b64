"""Noise schedules of the variance-preserving (VP) forward process, computed in float64.

Notation (docs/methods.md (Shared core)): x_t = a_t x_0 + sigma_t eps with a_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t). Time ``t = 0`` is the clean data (a_0 = 1, sigma_0 = 0) for every schedule.

* :class:`DiscreteSchedule` -- DDPM with integer times t = 1..T and betas beta_1..beta_T
  (``linear``, ``cosine``, ``sigmoid`` constructors, the names of :func:`make_schedule`; and the two schedules of
  SMD's settings: ``sigmoid_abar``, a sigmoid in abar rather than in beta, and ``linear_rescaled``, linear betas
  rescaled by 1000 / T).
* :class:`VPSDE` -- the continuous VP-SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw on t in [0, 1]
  with a linear beta(t) (Song et al. 2021).

Both expose the same interface, so every sampler in :mod:`gmmkernels.diffusion.samplers` runs on either:
``alpha_sigma(t)`` (float64 tensors), ``grid(K)`` (descending sampling times ending at 0),
``sample_t(n)`` (training times) and the transition coefficients below, all in float64:

* ``posterior(t, s)``: q(x_s | x_t, x_0) = N(A x_t + B x_0, lambda^2 I), s < t, with
  A = alpha_{t|s} sigma_s^2 / sigma_t^2,  B = a_s beta_{t|s} / sigma_t^2,  lambda^2 = sigma_s^2 beta_{t|s} / sigma_t^2,
  alpha_{t|s} = a_t / a_s, beta_{t|s} = sigma_t^2 - alpha_{t|s}^2 sigma_s^2.
* ``bridge(s, t, ell, eta)``: the DDIM(eta) bridge q(x_t | x_s, x_ell) between a cleaner state s and a
  noisier state ell (s < t < ell), docs/methods.md (MGDM); eta = 1 is the exact Markov bridge
  (the DDPM posterior when s = 0), eta = 0 the deterministic DDIM map.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

TimeLike = Union[int, float, Tensor]
_F64 = torch.float64

SCHEDULES = ("linear", "cosine", "sigmoid", "vp")


def _t64(t: TimeLike) -> Tensor:
    return torch.as_tensor(t, dtype=_F64)


class _Schedule:
    """Shared transition formulas; subclasses implement ``abar(t)`` and the time grids."""

    SPACINGS = ("uniform", "quadratic")  # the ``spacing`` values :meth:`grid` accepts

    #: Largest time (T for discrete schedules, 1.0 for the VP-SDE). Models normalise t by it.
    t_max: float
    continuous: bool

    def abar(self, t: TimeLike) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha_sigma(self, t: TimeLike) -> Tuple[Tensor, Tensor]:
        """(a_t, sigma_t) in float64, same shape as ``t``."""
        ab = self.abar(t)
        return ab.sqrt(), (1.0 - ab).clamp_min(0.0).sqrt()

    def snr(self, t: TimeLike) -> Tensor:
        ab = self.abar(t)
        return ab / (1.0 - ab)

    # -- transitions ------------------------------------------------------------------------
    def posterior(self, t: TimeLike, s: TimeLike) -> Tuple[Tensor, Tensor, Tensor]:
        """(A, B, lambda^2) of q(x_s | x_t, x_0) = N(A x_t + B x_0, lambda^2 I) for 0 <= s < t."""
        a_t, sig_t = self.alpha_sigma(t)
        a_s, sig_s = self.alpha_sigma(s)
        if bool((_t64(s) >= _t64(t)).any()):
            raise ValueError(f"posterior: need s < t, got s={s}, t={t}")
        a_ts = a_t / a_s
        beta_ts = sig_t**2 - a_ts**2 * sig_s**2
        A = a_ts * sig_s**2 / sig_t**2
        B = a_s * beta_ts / sig_t**2
        lam2 = sig_s**2 * beta_ts / sig_t**2
        return A, B, lam2

    def transition(self, t: TimeLike, s: TimeLike) -> Tuple[Tensor, Tensor]:
        """(alpha_{t|s}, beta_{t|s}): q(x_t | x_s) = N(alpha_{t|s} x_s, beta_{t|s} I) for s < t."""
        a_t, sig_t = self.alpha_sigma(t)
        a_s, sig_s = self.alpha_sigma(s)
        a_ts = a_t / a_s
        return a_ts, sig_t**2 - a_ts**2 * sig_s**2

    def bridge(self, s: TimeLike, t: TimeLike, ell: TimeLike, eta: float = 1.0) -> Tuple[Tensor, Tensor, Tensor]:
        """(coeff_s, coeff_ell, std) with x_t = coeff_s x_s + coeff_ell x_ell + std z, for s < t < ell.

        std = eta sqrt((1 - abar_ell/abar_t)(1 - abar_t/abar_s) / (1 - abar_ell/abar_s)),
        coeff_ell = sqrt((1 - abar_t/abar_s - std^2) / (1 - abar_ell/abar_s)),
        coeff_s = sqrt(abar_t/abar_s) - coeff_ell sqrt(abar_ell/abar_s)       (docs/methods.md (MGDM)).
        """
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"bridge: eta must lie in [0, 1], got {eta}")
        ab_s, ab_t, ab_l = self.abar(s), self.abar(t), self.abar(ell)
        if bool((_t64(s) >= _t64(t)).any()) or bool((_t64(t) >= _t64(ell)).any()):
            raise ValueError(f"bridge: need s < t < ell, got s={s}, t={t}, ell={ell}")
        r_ts, r_ls, r_lt = ab_t / ab_s, ab_l / ab_s, ab_l / ab_t
        std = eta * torch.sqrt(((1 - r_lt) * (1 - r_ts) / (1 - r_ls)).clamp_min(0.0))
        coeff_l = torch.sqrt(((1 - r_ts - std**2) / (1 - r_ls)).clamp_min(0.0))
        coeff_s = r_ts.sqrt() - coeff_l * r_ls.sqrt()
        return coeff_s, coeff_l, std

    def ddim(self, t: TimeLike, s: TimeLike, eta: float = 0.0) -> Tuple[Tensor, Tensor, Tensor]:
        """DDIM(eta) step t -> s written on (x0_hat, eps_hat): x_s = a_s x0 + c_eps eps + std z.

        std^2 = eta^2 lambda^2, c_eps = sqrt(sigma_s^2 - std^2). Returns (a_s, c_eps, std)."""
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"ddim: eta must lie in [0, 1], got {eta}")
        _, _, lam2 = self.posterior(t, s)
        a_s, sig_s = self.alpha_sigma(s)
        std = eta * lam2.sqrt()
        return a_s, (sig_s**2 - std**2).clamp_min(0.0).sqrt(), std

    def spec(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


class DiscreteSchedule(_Schedule):
    """DDPM schedule: betas beta_1..beta_T (float64), abar_0 = 1, abar_t = prod_{i<=t} (1 - beta_i).

    Tensors indexed by t = 0..T: ``abar_all``, ``a_all``, ``sigma_all`` (index 0 is the clean state);
    ``betas``/``alphas`` are indexed t-1.
    """

    continuous = False

    def __init__(self, betas: Tensor, name: str = "custom", params: Optional[dict] = None):
        betas = torch.as_tensor(betas, dtype=_F64).flatten()
        if betas.numel() < 1:
            raise ValueError("DiscreteSchedule: need at least one beta (T >= 1)")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("DiscreteSchedule: every beta must lie in (0, 1)")
        self.name, self.params = name, dict(params or {})
        self.T = int(betas.numel())
        self.t_max = float(self.T)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.abar_all = torch.cat([torch.ones(1, dtype=_F64), torch.cumprod(self.alphas, 0)])
        self.a_all = self.abar_all.sqrt()
        self.sigma_all = (1.0 - self.abar_all).sqrt()

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DiscreteSchedule":
        """Ho et al. (2020): betas linear from beta_start to beta_end (no rescaling with T)."""
        _check_T(T)
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"linear schedule: need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        return cls(torch.linspace(beta_start, beta_end, T, dtype=_F64), "linear",
                   {"T": T, "beta_start": beta_start, "beta_end": beta_end})

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "DiscreteSchedule":
        """Nichol & Dhariwal (2021): abar(t) = f(t)/f(0), f(t) = cos^2(pi/2 (t/T + s)/(1 + s));
        beta_t = min(1 - abar(t)/abar(t-1), max_beta)."""
        _check_T(T)
        if not s >= 0 or not 0 < max_beta < 1:
            raise ValueError(f"cosine schedule: need s >= 0 and 0 < max_beta < 1, got s={s}, max_beta={max_beta}")
        t = torch.arange(T + 1, dtype=_F64)
        f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
        ab = f / f[0]
        betas = (1 - ab[1:] / ab[:-1]).clamp(max=max_beta)
        return cls(betas, "cosine", {"T": T, "s": s, "max_beta": max_beta})

    @classmethod
    def sigmoid(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, span: float = 6.0) -> "DiscreteSchedule":
        """Sigmoid betas (as in GeoDiff, Xu et al. 2022): beta_t = beta_start + (beta_end - beta_start)
        * sigmoid(linspace(-span, span, T))."""
        _check_T(T)
        if not 0 < beta_start <= beta_end < 1 or not span > 0:
            raise ValueError(f"sigmoid schedule: need 0 < beta_start <= beta_end < 1 and span > 0")
        x = torch.linspace(-span, span, T, dtype=_F64)
        return cls(beta_start + (beta_end - beta_start) * torch.sigmoid(x), "sigmoid",
                   {"T": T, "beta_start": beta_start, "beta_end": beta_end, "span": span})

    @classmethod
    def sigmoid_abar(cls, T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> "DiscreteSchedule":
        """A sigmoid in abar, not in beta (Chen 2023; the SMD code's default, inherited from lucidrains'
        denoising-diffusion-pytorch ``sigmoid_beta_schedule``): abar(t) = (sigmoid(end / tau) -
        sigmoid(((t / T) (end - start) + start) / tau)) / (sigmoid(end/tau) - sigmoid(start/tau)), normalised to
        abar(0) = 1, betas = 1 - abar_t / abar_{t-1} clipped to [1e-8, 0.999]. Named "custom" (its spec lists the
        betas)."""
        t = torch.linspace(0, T, T + 1, dtype=_F64) / T
        v0, v1 = torch.sigmoid(torch.tensor(start / tau, dtype=_F64)), torch.sigmoid(torch.tensor(end / tau, dtype=_F64))
        ab = (-torch.sigmoid((t * (end - start) + start) / tau) + v1) / (v1 - v0)
        ab = ab / ab[0]
        betas = (1 - ab[1:] / ab[:-1]).clamp(1e-8, 0.999)
        return cls(betas, "custom")

    @classmethod
    def linear_rescaled(cls, T: int) -> "DiscreteSchedule":
        """DDPM linear betas 1e-4 .. 0.02 for T = 1000, rescaled by 1000 / T for other T (clipped to 0.999); the
        schedule of SMD's paper setting. Unlike :meth:`linear`, few steps still reach abar_T ~ 0. Named "custom"
        (its spec lists the betas)."""
        scale = 1000.0 / T
        betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=_F64).clamp(max=0.999)
        return cls(betas, "custom")

    # -- interface ----------------------------------------------------------------------------
    def _index(self, t: TimeLike) -> Tensor:
        t = _t64(t)
        ti = t.round().long()
        if bool((ti < 0).any()) or bool((ti > self.T).any()) or bool(((t - ti).abs() > 1e-6).any()):
            raise ValueError(f"DiscreteSchedule: times must be integers in [0, {self.T}]")
        return ti

    def abar(self, t: TimeLike) -> Tensor:
        return self.abar_all[self._index(t)]

    def grid(self, K: Optional[int] = None, spacing: str = "uniform") -> Tensor:
        """K + 1 descending times t_K = T > ... > t_1 >= 1 > t_0 = 0 (float64); K <= T steps.

        ``uniform``: t_i = round(i T / K); ``quadratic``: t_i = round((i/K)^2 T) made strictly increasing
        (DDIM's quadratic spacing; dense near the data)."""
        K = self.T if K is None else K
        if not isinstance(K, int) or isinstance(K, bool) or not 1 <= K <= self.T:
            raise ValueError(f"grid: the number of steps K must be an int in [1, T={self.T}], got {K!r}")
        i = torch.arange(K + 1, dtype=_F64)
        if spacing == "uniform":
            ts = torch.round(i * self.T / K)
        elif spacing == "quadratic":
            ts = torch.round((i / K) ** 2 * self.T)
            for j in range(1, K + 1):  # strictly increasing and ending at T
                ts[j] = max(ts[j], ts[j - 1] + 1)
            for j in range(K - 1, -1, -1):
                ts[j] = min(ts[j], ts[j + 1] - 1)
            ts[-1] = self.T
        else:
            raise ValueError(f"grid: spacing must be 'uniform' or 'quadratic', got {spacing!r}")
        return ts.flip(0)

    def sample_t(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Training times t ~ U{1..T} as float tensor [n]."""
        return torch.randint(1, self.T + 1, (n,), generator=generator, device=device).to(torch.get_default_dtype())

    def spec(self) -> dict:
        if self.name == "custom":
            return {"name": "custom", "betas": self.betas.tolist()}
        return {"name": self.name, **self.params}

    def __repr__(self) -> str:
        return f"DiscreteSchedule({self.name}, T={self.T})"


class VPSDE(_Schedule):
    """Continuous VP-SDE with beta(t) = beta_min + t (beta_max - beta_min), t in [0, 1].

    log abar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2). Sampling grids stop at ``t_min``
    before the final jump to t = 0 (the score blows up at t = 0)."""

    continuous = True
    t_max = 1.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"VPSDE: need 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
        if not 0 < t_min < 1:
            raise ValueError(f"VPSDE: t_min must lie in (0, 1), got {t_min}")
        self.name = "vp"
        self.beta_min, self.beta_max, self.t_min = float(beta_min), float(beta_max), float(t_min)

    def _check(self, t: TimeLike) -> Tensor:
        t = _t64(t)
        if bool((t < 0).any()) or bool((t > 1 + 1e-12).any()):
            raise ValueError("VPSDE: times must lie in [0, 1]")
        return t

    def beta(self, t: TimeLike) -> Tensor:
        return self.beta_min + self._check(t) * (self.beta_max - self.beta_min)

    def abar(self, t: TimeLike) -> Tensor:
        t = self._check(t)
        return torch.exp(-(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2))

    def grid(self, K: int = 100, spacing: str = "uniform") -> Tensor:
        """K + 1 descending times: K values from 1 down to t_min (uniform or quadratic), then 0."""
        if not isinstance(K, int) or isinstance(K, bool) or K < 1:
            raise ValueError(f"grid: the number of steps K must be a positive int, got {K!r}")
        u = torch.linspace(1.0, 0.0, K, dtype=_F64) if K > 1 else torch.ones(1, dtype=_F64)
        if spacing == "uniform":
            ts = self.t_min + (1 - self.t_min) * u
        elif spacing == "quadratic":
            ts = self.t_min + (1 - self.t_min) * u**2
        else:
            raise ValueError(f"grid: spacing must be 'uniform' or 'quadratic', got {spacing!r}")
        return torch.cat([ts, torch.zeros(1, dtype=_F64)])

    def sample_t(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Training times t ~ U(t_min, 1) [n]."""
        u = torch.rand(n, generator=generator, device=device)
        return self.t_min + (1 - self.t_min) * u

    def spec(self) -> dict:
        return {"name": "vp", "beta_min": self.beta_min, "beta_max": self.beta_max, "t_min": self.t_min}

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, t_min={self.t_min})"


def _check_T(T) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"schedule: T must be a positive int, got {T!r}")


def make_schedule(name: str = "linear", T: int = 1000, **kw) -> _Schedule:
    """Build a schedule by name: 'linear' | 'cosine' | 'sigmoid' (discrete, T steps) | 'vp' (continuous)."""
    if name == "linear":
        return DiscreteSchedule.linear(T, **kw)
    if name == "cosine":
        return DiscreteSchedule.cosine(T, **kw)
    if name == "sigmoid":
        return DiscreteSchedule.sigmoid(T, **kw)
    if name == "vp":
        return VPSDE(**kw)
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def schedule_from_spec(spec: dict) -> _Schedule:
    spec = dict(spec)
    name = spec.pop("name")
    if name == "custom":
        return DiscreteSchedule(torch.tensor(spec["betas"], dtype=_F64))
    if name == "vp":
        return VPSDE(**spec)
    T = spec.pop("T")
    return make_schedule(name, T, **spec)


Schedule = _Schedule
