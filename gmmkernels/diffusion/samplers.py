"""Reverse-process samplers for any epsilon-network (trained model or :class:`MixtureOracle`).

The network is called as ``model(x, t)`` (``t`` a [N] tensor in the schedule's time units), with
``cond=`` added only when a condition is given and ``heads=True`` only by samplers that need the extra
heads (it must then return a dict with at least ``"eps"`` and ``"eps2"``). Every sampler

* runs K steps on the grid ``schedule.grid(K, spacing)`` (t_K > ... > t_1 > t_0 = 0; K <= T for DDPM),
* computes its coefficients in float64 and updates x in ``dtype``,
* draws all randomness (start noise included) from ``generator``: the same seed gives identical samples; or takes
  the per-step noise from ``noise(i, x)`` (step i = 0..K-1, N(0, I) like x), e.g. :func:`counter_noise`, so that
  two samplers compared on the same seed share every random number (common random numbers).

Samplers (names for :func:`sample`):
  ``ddpm``         ancestral DDPM, posterior variance lambda^2 (beta-tilde, "small")
  ``ddpm_large``   ancestral DDPM, variance beta_{t|s} (beta, "large"); no noise on the last step
  ``ddim``         DDIM(eta); eta = 0 deterministic, eta = 1 equals ``ddpm``
  ``sn_ddpm``      SN-DDPM (Bao et al. 2022b): per-element variance lambda^2 + B^2 Var[x0|x_t] from the eps2 head
  ``analytic_dpm`` Analytic-DPM (Bao et al. 2022a): per-step scalar variance lambda^2 + B^2 sigma_t^2/a_t^2 (1 - Gamma_t),
                   Gamma_t = E||eps(x_t)||^2 / d estimated by Monte Carlo on data (``x0_ref``) or given (``gamma``)
  ``euler_maruyama`` Euler-Maruyama on the reverse VP-SDE (continuous schedules), Tweedie denoising at the end
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from .. import _validate as V
from ..reference.rng import philox_normal_ref, seed64
from .oracle import heads_dict
from .schedules import Schedule

NoiseFn = Callable[[int, Tensor], Tensor]

SAMPLERS = ("ddpm", "ddpm_large", "ddim", "sn_ddpm", "analytic_dpm", "euler_maruyama")


def _call(model, x: Tensor, t: float, cond, heads: bool = False):
    tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    kw = {}
    if cond is not None:
        kw["cond"] = cond
    if heads:
        kw["heads"] = True
        out = heads_dict(model(x, tt, **kw))
        if "eps" not in out:
            raise ValueError("sampler: the model's heads must include 'eps'")
        return out
    out = model(x, tt, **kw)
    return out["eps"] if isinstance(out, dict) else out


def start_noise(shape, x_T, generator, device, dtype) -> Tensor:
    """The start of a reverse process: a copy of ``x_T`` in ``dtype`` (on ``device`` when given), or fresh
    N(0, I) noise of ``shape`` from ``generator`` (on ``device``, else the generator's device)."""
    if x_T is not None:
        return x_T.to(device=device if device is not None else x_T.device, dtype=dtype).clone()
    if device is None:
        device = generator.device if generator is not None else "cpu"
    return torch.randn(*shape, generator=generator, device=device, dtype=dtype)


def step_noise(x: Tensor, generator) -> Tensor:
    """N(0, I) noise like ``x`` (shape, device, dtype) from ``generator``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def counter_noise(seed: int, tag: int = 7, offset: int = 0) -> NoiseFn:
    """Per-step noise from the counter-based stream of the native kernels (docs/kernels.md (Random numbers)): the
    normal of element e at step i is Philox(seed, e, offset + i, tag), the same number whichever sampler draws it.
    With the default tag 7 these are the normals z of :func:`gmmkernels.gms_step` at ``offset=offset + i``, so a
    Gaussian sampler and GMS given one seed share every step's noise. Computed in float64 (exact to a few ulp)."""
    fn = "counter_noise"
    key = seed64(V.seed(fn, "seed", seed))
    tag = V.integer(fn, "tag", tag, lo=0, hi=(1 << 16) - 1)
    offset = V.integer(fn, "offset", offset, lo=0, hi=(1 << 32) - 1)

    def noise(i: int, like: Tensor) -> Tensor:
        idx = torch.arange(like.numel(), dtype=torch.int64)
        z = philox_normal_ref(idx, key, int(offset) + int(i), int(tag))
        return z.reshape(like.shape).to(device=like.device, dtype=like.dtype)

    return noise


def progress_bar(it, progress: bool, desc: str):
    """``it`` itself, or wrapped in a tqdm progress bar when ``progress``."""
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)


def _x0(x: Tensor, eps: Tensor, a: float, s: float, clip_x0: Optional[float]) -> Tensor:
    x0 = (x - s * eps) / a
    return x0.clamp(-clip_x0, clip_x0) if clip_x0 is not None else x0


def _check_model(fn: str, model, schedule) -> None:
    if not callable(model):
        raise TypeError(f"{fn}: argument 'model' must be callable as model(x, t), got {type(model).__name__}")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"{fn}: argument 'schedule' must be a DiscreteSchedule or VPSDE, got {type(schedule).__name__}")


def check_steps(fn: str, schedule: Schedule, K) -> int:
    """K sampling steps: an int in [1, T] for a discrete schedule, >= 1 for the VP-SDE."""
    hi = None if schedule.continuous else schedule.T
    what = "the number of steps K must be an int " + (">= 1" if hi is None else f"in [1, T={hi}]")
    return V.integer(fn, "K", K, lo=1, hi=hi, what=what)


def _check_sample(fn: str, model, schedule, shape, method, K, generator, x_T, eta, clip_x0, spacing, device, dtype,
                  x0_ref, gamma, last_var_max, progress, return_trajectory, noise) -> tuple:
    """Checks of :func:`sample`'s arguments; returns (shape, K, gamma as a float64 tensor or None)."""
    _check_model(fn, model, schedule)
    shape = V.sizes(fn, "shape", shape, what="a shape (N, ...) of positive ints")
    if not isinstance(method, str) or method not in SAMPLERS:
        raise ValueError(f"{fn}: argument 'method': unknown sampler {method!r}; choose one of {SAMPLERS}")
    if method == "euler_maruyama" and not schedule.continuous:
        raise ValueError(f"{fn}: argument 'method' 'euler_maruyama' integrates the continuous VP-SDE; use schedule "
                         "'vp' (DiscreteSchedule works with ddpm / ddpm_large / ddim / sn_ddpm / analytic_dpm)")
    K = check_steps(fn, schedule, (schedule.T if not schedule.continuous else 100) if K is None else K)
    V.generator(fn, "generator", generator)
    if x_T is not None:
        V.tensor(fn, "x_T", x_T)
        if tuple(x_T.shape) != shape:
            raise ValueError(f"{fn}: argument 'x_T' must have the shape {list(shape)}, got {list(x_T.shape)}")
    V.number(fn, "eta", eta, lo=0.0, hi=1.0, what="a number in [0, 1]")
    if clip_x0 is not None:
        V.number(fn, "clip_x0", clip_x0, lo=0.0, lo_open=True, what="None or a positive finite number")
    if last_var_max is not None:
        V.number(fn, "last_var_max", last_var_max, lo=0.0, what="None or a finite number >= 0")
    V.choice(fn, "spacing", spacing, getattr(schedule, "SPACINGS", ("uniform", "quadratic")))
    V.device(fn, "device", device)
    V.dtype(fn, "dtype", dtype)
    V.flag(fn, "progress", progress)
    V.flag(fn, "return_trajectory", return_trajectory)
    if noise is not None and not callable(noise):
        raise TypeError(f"{fn}: argument 'noise' must be a callable noise(i, x) -> Tensor, got {type(noise).__name__}")
    if method == "analytic_dpm":
        if gamma is not None:
            gamma = torch.as_tensor(gamma, dtype=torch.float64).flatten()
            if gamma.numel() != K:
                raise ValueError(f"{fn}: argument 'gamma' must hold one value per step (K={K}), got {gamma.numel()}")
            V.finite(fn, "gamma", gamma)
        elif x0_ref is None:
            raise ValueError(f"{fn}: 'analytic_dpm' needs x0_ref (data samples to estimate Gamma_t) or gamma")
        else:
            _check_data_like(fn, "x0_ref", x0_ref, shape)
    return shape, K, gamma


def _check_data_like(fn: str, name: str, t, shape) -> None:
    """``t`` [M, *shape[1:]] with M >= 1: data samples of the law being sampled."""
    V.tensor(fn, name, t)
    if t.dim() != len(shape) or tuple(t.shape[1:]) != tuple(shape[1:]) or t.shape[0] < 1:
        raise ValueError(f"{fn}: argument '{name}' must have shape [M, {', '.join(map(str, shape[1:]))}] with M >= 1, "
                         f"got {list(t.shape)}")


@torch.no_grad()
def sample(model, schedule: Schedule, shape: Sequence[int], method: str = "ddpm", K: Optional[int] = None, *,
           generator: Optional[torch.Generator] = None, x_T: Optional[Tensor] = None, cond=None, eta: float = 0.0,
           clip_x0: Optional[float] = None, spacing: str = "uniform", device=None, dtype: torch.dtype = torch.float32,
           x0_ref: Optional[Tensor] = None, gamma: Optional[Tensor] = None, last_var_max: Optional[float] = None,
           progress: bool = False, return_trajectory: bool = False, noise: Optional[NoiseFn] = None):
    """Draw ``shape[0]`` samples with one of :data:`SAMPLERS` in K steps (default: T for discrete schedules,
    100 for the VP-SDE). Returns x0 [shape], or (x0, [x_{t_K}, ..., x_{t_0}]) with ``return_trajectory``.

    ``clip_x0`` clamps predicted x0 to [-c, c] (images in [-1, 1]); ``eta`` is DDIM's; ``x0_ref``/``gamma``
    feed Analytic-DPM; ``last_var_max`` caps the last-step variance of SN-DDPM / Analytic-DPM. ``noise(i, x)``
    replaces the generator's per-step noise (step i of the K steps), e.g. :func:`counter_noise`.
    """
    return _sample("sample", model, schedule, shape, method, K, generator=generator, x_T=x_T, cond=cond, eta=eta,
                   clip_x0=clip_x0, spacing=spacing, device=device, dtype=dtype, x0_ref=x0_ref, gamma=gamma,
                   last_var_max=last_var_max, progress=progress, return_trajectory=return_trajectory, noise=noise)


def _sample(fn: str, model, schedule: Schedule, shape: Sequence[int], method: str = "ddpm", K: Optional[int] = None, *,
            generator: Optional[torch.Generator] = None, x_T: Optional[Tensor] = None, cond=None, eta: float = 0.0,
            clip_x0: Optional[float] = None, spacing: str = "uniform", device=None, dtype: torch.dtype = torch.float32,
            x0_ref: Optional[Tensor] = None, gamma: Optional[Tensor] = None, last_var_max: Optional[float] = None,
            progress: bool = False, return_trajectory: bool = False, noise: Optional[NoiseFn] = None):
    """:func:`sample`, with ``fn`` the name its messages give (the wrappers ddpm, ddim, ... pass theirs)."""
    shape, K, gamma = _check_sample(fn, model, schedule, shape, method, K, generator, x_T, eta, clip_x0, spacing,
                                    device, dtype, x0_ref, gamma, last_var_max, progress, return_trajectory, noise)
    ts = schedule.grid(K, spacing)
    x = start_noise(shape, x_T, generator, device, dtype)
    step = 0

    def z_like(x: Tensor) -> Tensor:
        return step_noise(x, generator) if noise is None else noise(step, x)

    traj: List[Tensor] = [x.clone()] if return_trajectory else []
    desc = f"{method} K={K}"

    if method == "analytic_dpm" and gamma is None:
        gamma = estimate_gamma(model, schedule, x0_ref, ts[:-1], cond=None, generator=generator)

    if method == "euler_maruyama":
        for i in progress_bar(range(K), progress, desc):
            step = i
            t, s = float(ts[i]), float(ts[i + 1])
            a_t, sig_t = (float(v) for v in schedule.alpha_sigma(t))
            eps = _call(model, x, t, cond)
            if s == 0.0:  # final jump: Tweedie denoising at t_min
                x = _x0(x, eps, a_t, sig_t, clip_x0)
            else:
                beta = float(schedule.beta(t))
                dt = t - s  # > 0, integrating backwards in time
                score = -eps / sig_t
                x = x + (0.5 * beta * x + beta * score) * dt + (beta * dt) ** 0.5 * z_like(x)
            if return_trajectory:
                traj.append(x.clone())
        return (x, traj) if return_trajectory else x

    for i in progress_bar(range(K), progress, desc):
        step = i
        t, s = float(ts[i]), float(ts[i + 1])
        a_t, sig_t = (float(v) for v in schedule.alpha_sigma(t))
        A, B, lam2 = (float(v) for v in schedule.posterior(t, s))
        last = s == 0.0
        if method in ("ddpm", "ddpm_large"):
            eps = _call(model, x, t, cond)
            x0 = _x0(x, eps, a_t, sig_t, clip_x0)
            mean = A * x + B * x0
            if method == "ddpm":
                var = lam2
            else:
                var = 0.0 if last else float(schedule.transition(t, s)[1])
            x = mean + var**0.5 * z_like(x) if var > 0 else mean
        elif method == "ddim":
            eps = _call(model, x, t, cond)
            x0 = _x0(x, eps, a_t, sig_t, clip_x0)
            if clip_x0 is not None:
                eps = (x - a_t * x0) / sig_t
            a_s, c_eps, std = (float(v) for v in schedule.ddim(t, s, eta))
            x = a_s * x0 + c_eps * eps
            if std > 0:
                x = x + std * z_like(x)
        elif method == "sn_ddpm":
            h = _call(model, x, t, cond, heads=True)
            if "eps2" not in h:
                raise ValueError("sample: 'sn_ddpm' needs a model with an 'eps2' head (second moment E[eps^2|x_t])")
            eps, eps2 = h["eps"], h["eps2"]
            x0 = _x0(x, eps, a_t, sig_t, clip_x0)
            var0 = (sig_t**2 / a_t**2) * (eps2 - eps * eps)
            var0 = var0.clamp_min(0.0) if clip_x0 is None else var0.clamp(0.0, clip_x0**2)
            var = lam2 + B * B * var0
            if last and last_var_max is not None:
                var = var.clamp(max=last_var_max)
            x = A * x + B * x0 + var.sqrt() * z_like(x)
        elif method == "analytic_dpm":
            eps = _call(model, x, t, cond)
            x0 = _x0(x, eps, a_t, sig_t, clip_x0)
            g = min(float(gamma[i]), 1.0)
            var = lam2 + B * B * (sig_t**2 / a_t**2) * (1.0 - g)
            if last and last_var_max is not None:
                var = min(var, last_var_max)
            x = A * x + B * x0 + var**0.5 * z_like(x)
        if return_trajectory:
            traj.append(x.clone())
    return (x, traj) if return_trajectory else x


@torch.no_grad()
def estimate_gamma(model, schedule: Schedule, x0: Tensor, times: Tensor, *, cond=None, batch_size: int = 4096,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """Analytic-DPM's Gamma_t = E_{x0, eps} ||eps_theta(x_t, t)||^2 / d at each time (float64 [len(times)])."""
    fn = "estimate_gamma"
    _check_model(fn, model, schedule)
    V.tensor(fn, "x0", x0)
    if x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"{fn}: argument 'x0' must have shape [M, ...] with M >= 1, got {list(x0.shape)}")
    try:
        times = torch.as_tensor(times, dtype=torch.float64).detach().cpu().flatten()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{fn}: argument 'times' must be a tensor or a sequence of numbers, got {times!r}") from None
    if not bool(((times >= 0) & (times <= schedule.t_max)).all()):  # NaN fails both comparisons
        raise ValueError(f"{fn}: argument 'times' must lie in [0, t_max={schedule.t_max:g}], got {times.tolist()}")
    batch_size = V.integer(fn, "batch_size", batch_size, lo=1)
    V.generator(fn, "generator", generator)
    out = []
    x0 = x0[:batch_size]
    d = x0[0].numel()
    for t in torch.as_tensor(times, dtype=torch.float64).tolist():
        a, s = (float(v) for v in schedule.alpha_sigma(t))
        xt = a * x0 + s * torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        eps = _call(model, xt, t, cond)
        out.append(float((eps.double() ** 2).sum() / (x0.shape[0] * d)))
    return torch.tensor(out, dtype=torch.float64)


def ddpm(model, schedule, shape, K=None, *, variance: str = "small", **kw):
    """Ancestral DDPM; ``variance`` 'small' (beta-tilde = lambda^2) or 'large' (beta_{t|s})."""
    V.choice("ddpm", "variance", variance, ("small", "large"))
    return _sample("ddpm", model, schedule, shape, "ddpm" if variance == "small" else "ddpm_large", K, **kw)


def ddim(model, schedule, shape, K=None, *, eta: float = 0.0, **kw):
    return _sample("ddim", model, schedule, shape, "ddim", K, eta=eta, **kw)


def sn_ddpm(model, schedule, shape, K=None, **kw):
    return _sample("sn_ddpm", model, schedule, shape, "sn_ddpm", K, **kw)


def analytic_dpm(model, schedule, shape, K=None, **kw):
    return _sample("analytic_dpm", model, schedule, shape, "analytic_dpm", K, **kw)


def euler_maruyama(model, schedule, shape, K=100, **kw):
    return _sample("euler_maruyama", model, schedule, shape, "euler_maruyama", K, **kw)
