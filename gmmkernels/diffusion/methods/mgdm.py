"""MGDM (mixture-guided diffusion for inverse problems, Janati et al., arXiv 2502.03332) and DPS, on any epsilon-network.

The sampler follows the official implementation as specified in docs/methods.md (MGDM) (outer loop over K grid
times, R Gibbs sweeps per step, each sweep = Gauss_VI for x_s | x_0, x_t (G Adam steps), M-step DDIM(eta=1) from s
to 0 for x_0, and a DDPM bridge draw for x_t), with the defaults given there (the "images, default block" column:
K=100, R=1, M=20, G = 20 for the last 10 steps else 3, lr = 0.01 for the first 11 steps else 0.03, index sampling
'mix' with threshold 70 and min_tau 10, eta=1).

Conventions: ``acp`` is the *model's* cumulative product abar_0..abar_{T-1} (0-based, as the network was trained);
the sampler works in the official code's extended index space acp_ext = [1, clip(acp, 1e-6, 1)], where index 0 is
clean data. Two choices the official code makes implicitly are flags here:

* ``time_index``: the official code queries the network at integer t while using acp_ext[t] = abar_{t-1} as its
  noise level (docs/methods.md (MGDM), an off-by-one). ``"fixed"`` (default) queries the network at t-1, the time
  whose noise level is actually used; ``"official"`` reproduces the code.
* ``settings``: ``"default"`` (default) uses the default block, which is what the official image runs actually apply
  (``test_images.py`` never calls ``update_sampler_cfg``); ``"ffhq"`` applies the per-dataset context block that the
  paper's tuning implies but the image code never applies (G = 20 if i >= K-30 else 5).

``vi_scale`` (default 1.0, the official code) runs Gauss_VI in units of a data scale. Adam moves each parameter by
about lr per step whatever the gradient, so the image learning rates (data in [-1, 1]) do not transfer to data of
another scale: on the gmm_25 toy (std ~11 per coordinate) the unscaled VI barely moves its means and MGDM stays near
the prior (sliced W 10.6 vs 2.2 for DPS at dim 10). The toy's settings (``toy_config`` in
:mod:`gmmkernels.diffusion.experiments.mgdm`) set vi_scale = toy std / 0.5; with it MGDM beats tuned DPS on the toy at dim 100 and ties it at dim 10 (see
``reproduce_mgdm`` there). With exact Gaussian conditionals in place of Gauss_VI (Gaussian
prior) the Gibbs chain recovers the exact posterior, which is how the rest of the sampler was checked.

An epsilon-network is any callable ``eps_net(x, t: int) -> eps`` (t a model time index 0..T-1). Observation models are
plug-ins with ``log_pot(x0) -> [B]`` (:class:`LinearObservation`, :class:`Inpainting`, :class:`Blur`,
:class:`PhaseObservation`).

Fused kernels: ``fused=True`` (the default) runs the per-element work through :func:`gmmkernels.mgdm_vi_step`
(gradient of the VI loss from the VJP, Adam update of (mu, rho), next reparameterised sample, one pass) and
:func:`gmmkernels.mgdm_bridge` (bridge draws), on the backend ``backend`` picks (the native kernel of the device, or
the reference, which draws the same counter-based numbers); ``fused=False`` is the literal eager version (autograd
through the VI loss + torch.optim.Adam, torch's generator), used as the test oracle and the benchmark baseline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from ... import mgdm_bridge, mgdm_vi_step

# ----------------------------------------------------------------------------------------------
# observation models


class Observation:
    """y = forward(x0) + sigma_y * noise; log_pot(x0) = -||y - forward(x0)||^2 / (2 sigma_y^2), one value per sample."""

    sigma_y: float = 0.05
    y: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def observe(self, x0: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        yh = self.forward(x0)
        return yh + self.sigma_y * torch.randn(yh.shape, generator=generator, dtype=yh.dtype, device=yh.device)

    def log_pot(self, x: Tensor) -> Tensor:
        r = (self.y - self.forward(x)).reshape(x.shape[0], -1)
        return -0.5 * (r * r).sum(-1) / self.sigma_y**2

    def residual_norm(self, x: Tensor) -> Tensor:
        return (self.y - self.forward(x)).reshape(x.shape[0], -1).norm(dim=-1)


@dataclass
class LinearObservation(Observation):
    """y = A x (x flattened per sample), A [d_y, D]."""

    A: Tensor
    y: Optional[Tensor] = None
    sigma_y: float = 0.05

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ self.A.to(x.dtype).T


@dataclass
class Inpainting(Observation):
    """y = mask * x (mask broadcast over the batch; 1 = observed)."""

    mask: Tensor
    y: Optional[Tensor] = None
    sigma_y: float = 0.05

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask.to(x.dtype)


@dataclass
class Blur(Observation):
    """y = k * x, a 2-D convolution per channel with 'same' zero padding; x [B, C, H, W], kernel [h, w]."""

    kernel: Tensor
    y: Optional[Tensor] = None
    sigma_y: float = 0.05

    def forward(self, x: Tensor) -> Tensor:
        C = x.shape[1]
        k = self.kernel.to(x.dtype)[None, None].expand(C, 1, *self.kernel.shape)
        return torch.nn.functional.conv2d(x, k, padding=(self.kernel.shape[0] // 2, self.kernel.shape[1] // 2), groups=C)


@dataclass
class PhaseObservation(Observation):
    """A non-linear model: y = |A x| (phase retrieval of a real signal)."""

    A: Tensor
    y: Optional[Tensor] = None
    sigma_y: float = 0.05

    def forward(self, x: Tensor) -> Tensor:
        return (x.reshape(x.shape[0], -1) @ self.A.to(x.dtype).T).abs()


def gaussian_kernel(size: int = 5, std: float = 1.0) -> Tensor:
    c = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (c / std) ** 2)
    k = g[:, None] * g[None, :]
    return k / k.sum()


# ----------------------------------------------------------------------------------------------
# settings


@dataclass
class MGDMConfig:
    K: int = 100  # outer grid size (nsteps)
    R: int = 1  # Gibbs sweeps per outer step (n_reps)
    M: int = 20  # DDIM steps from s to 0 (n_denoising_steps)
    settings: str = "default"  # "default" (what the official image runs apply) | "ffhq" (context block, never applied there)
    tau: str = "mix"  # "mix" | "uniform" | "deterministic"
    threshold: Optional[int] = None  # None: 70 at K=100, scaled as round(0.7 K) otherwise
    min_tau: int = 10
    eta: float = 1.0
    time_index: str = "fixed"  # "fixed" | "official"
    adam: tuple = (0.9, 0.999, 1e-8)
    G: Optional[Callable[[int], int]] = None  # overrides the settings' gradient-step schedule
    lr: Optional[Callable[[int], float]] = None
    vi_scale: float = 1.0  # Gauss_VI runs in units of vi_scale (1.0 = the official code; see _gauss_vi)
    lr_mult: float = 1.0  # multiplies every Gauss_VI learning rate (a tuning knob; 1.0 = the settings' rates)

    def grad_steps(self, i: int) -> int:
        if self.G is not None:
            return int(self.G(i))
        if self.settings == "ffhq":
            return 20 if i >= self.K - 30 else 5
        return 20 if i >= self.K - 10 else 3

    def learning_rate(self, i: int) -> float:
        if self.lr is not None:
            return float(self.lr(i)) * self.lr_mult
        return (0.01 if i <= 10 else 0.03) * self.lr_mult


@dataclass
class CallCounter:
    forward: int = 0  # network forward evaluations (per batch)
    vjp: int = 0  # forward + backward evaluations (a VJP)
    by_phase: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Network evaluations with a VJP counted as two (forward + backward)."""
        return self.forward + 2 * self.vjp


# ----------------------------------------------------------------------------------------------
# the sampler


class _Diffusion:
    def __init__(self, eps_net, acp: Tensor, time_index: str, counter: CallCounter, dtype, device):
        if time_index not in ("fixed", "official"):
            raise ValueError(f"mgdm: time_index must be 'fixed' or 'official', got {time_index!r}")
        acp = torch.as_tensor(acp, dtype=torch.float64).flatten()
        self.T = acp.shape[0]
        self.acp = torch.cat([torch.ones(1, dtype=torch.float64), acp.clamp(1e-6, 1.0)])  # float64, like acp_f8
        self.net, self.fixed, self.count = eps_net, time_index == "fixed", counter
        self.dtype, self.device = dtype, device

    def net_time(self, t: int) -> int:
        return min(max(t - 1, 0) if self.fixed else t, self.T - 1)

    def denoise(self, x: Tensor, t: int, grad: bool = False) -> Tensor:
        a = float(self.acp[t])
        eps = self.net(x, self.net_time(t))
        if grad:
            self.count.vjp += 1
        else:
            self.count.forward += 1
        return (x - math.sqrt(1 - a) * eps) / math.sqrt(a)

    def bridge(self, s: int, t: int, ell: int, eta: float = 1.0):
        """(coeff_s, coeff_ell, std) of q_{t|s,ell} (docs/methods.md (MGDM))."""
        a_s, a_t, a_l = (float(self.acp[i]) for i in (s, t, ell))
        r_ts, r_ls, r_lt = a_t / a_s, a_l / a_s, a_l / a_t
        std = eta * math.sqrt(max((1 - r_lt) * (1 - r_ts) / (1 - r_ls), 0.0))
        c_l = math.sqrt(max((1 - r_ts - std**2) / (1 - r_ls), 0.0))
        c_s = math.sqrt(r_ts) - c_l * math.sqrt(r_ls)
        return c_s, c_l, std


class _Noise:
    """Bridge draws c_s x_s + c_l x_l + std z: fused (counter-based z) or eager (torch generator); and the fused
    Gauss_VI step, which draws its noise from the same counter-based stream."""

    def __init__(self, fused: bool, seed: int, generator: Optional[torch.Generator], backend: str = "auto"):
        self.fused, self.seed, self.gen, self.draw, self.backend = fused, seed, generator, 0, backend

    def bridge(self, xs: Tensor, xl: Tensor, cs: float, cl: float, std: float) -> Tensor:
        self.draw += 1
        if self.fused:
            return mgdm_bridge(xs, xl, cs, cl, std, seed=self.seed, draw=self.draw, backend=self.backend)
        z = torch.randn(xs.shape, generator=self.gen, dtype=xs.dtype, device=xs.device)
        return cs * xs + cl * xl + std * z

    def randn(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.gen, dtype=like.dtype, device=like.device)

    def vi_step(self, state: Tensor, gam: Tensor, eps: Tensor, flat: Tensor, inv_s2: Tensor, lr: float, beta1: float,
                beta2: float, aeps: float, step: int):
        """One fused Gauss_VI step (Adam update of (mu, rho) in ``state``, next reparameterised sample) on the next
        counter-based draw; returns (v, eps)."""
        self.draw += 1
        return mgdm_vi_step(state, gam, eps, flat, inv_s2, lr=lr, beta1=beta1, beta2=beta2, adam_eps=aeps, step=step,
                            seed=self.seed, draw=self.draw, backend=self.backend)


def _gauss_vi(dif: _Diffusion, noise: _Noise, log_pot, x0: Tensor, xt: Tensor, s: int, t: int, G: int, lr: float,
              adam: tuple, fused: bool, scale: float = 1.0) -> Tensor:
    """x_s | x_0, x_t by Gauss_VI (docs/methods.md (MGDM)): G Adam steps on (mu, rho), then a fresh sample.

    ``scale`` = c runs the optimisation in units of c: u = x / c, so the variational mean moves by about c * lr per
    Adam step while the log-std rho keeps its scale-free steps. The loss is the same function of x (the quadratic
    prior term and the entropy are invariant up to a constant), only Adam's parameterisation changes. c = 1 is
    the official code; Adam is not scale-equivariant, so its image learning rates (data in [-1, 1]) only transfer
    to data of another scale with c = (data scale) / (image scale)."""
    c0, ct, sig = dif.bridge(0, s, t, 1.0)  # prior q_{s|0,t}: m = ct x_t + c0 x0, std sig
    m = (ct * xt + c0 * x0).detach()
    B = x0.shape[0]
    c = float(scale)
    flat = m.reshape(B, -1) / c  # prior mean in VI units
    sig_u = sig / c
    beta1, beta2, aeps = adam

    def neg_grad(v: Tensor) -> Tensor:  # gradient of -log_pot(D_s(c v)) w.r.t. v (VI units)
        with torch.enable_grad():
            v = v.detach().requires_grad_(True)
            lp = log_pot(dif.denoise(c * v, s, grad=True)).sum()
            (g,) = torch.autograd.grad(lp, v)
        return -g

    if fused:
        P = flat.shape[1]
        state = torch.zeros(6, B, P, dtype=m.dtype, device=m.device)
        state[0] = flat
        state[1] = math.log(sig_u)
        inv_s2 = torch.full((B,), 1.0 / sig_u**2, dtype=m.dtype, device=m.device)
        eps = noise.randn(flat)
        v = flat + sig_u * eps
        for g_i in range(1, G + 1):
            gam = neg_grad(v.reshape(m.shape)).reshape(B, P)
            v, eps = noise.vi_step(state, gam, eps, flat, inv_s2, lr, beta1, beta2, aeps, g_i)
        return (c * v).reshape(m.shape)
    mu = flat.clone().requires_grad_(True)
    rho = torch.full_like(flat, math.log(sig_u)).requires_grad_(True)
    opt = torch.optim.Adam([mu, rho], lr=lr, betas=(beta1, beta2), eps=aeps)
    for _ in range(G):
        eps = noise.randn(flat)
        with torch.enable_grad():
            v = mu + rho.exp() * eps
            loss = (-log_pot(dif.denoise(c * v.reshape(m.shape), s, grad=True)).sum()
                    + 0.5 * (((v - flat) / sig_u) ** 2).sum() - rho.sum())
            opt.zero_grad()
            loss.backward()
        opt.step()
    with torch.no_grad():
        return (c * (mu + rho.exp() * noise.randn(flat))).reshape(m.shape)


def _ddim_to_zero(dif: _Diffusion, noise: _Noise, xs: Tensor, s: int, M: int, eta: float) -> Tensor:
    n = min(M, s + 1)
    if n < 2:
        return dif.denoise(xs, s)
    grid = torch.linspace(0, s, n).long().tolist()
    x = xs
    for i in range(n - 1, 1, -1):
        t_cur, t_nxt = grid[i], grid[i - 1]
        x0h = dif.denoise(x, t_cur)
        c0, cl, std = dif.bridge(0, t_nxt, t_cur, eta)
        x = noise.bridge(x0h, x, c0, cl, std)
    return dif.denoise(x, grid[1])


@torch.no_grad()
def mgdm(eps_net, acp: Tensor, log_pot: Callable[[Tensor], Tensor], shape, config: Optional[MGDMConfig] = None, *,
         fused: Optional[bool] = None, seed: int = 0, device="cpu", dtype=torch.float32,
         counter: Optional[CallCounter] = None, backend: str = "auto") -> Tensor:
    """Draw ``shape[0]`` approximate posterior samples x0 ~ pi(x0) ∝ exp(log_pot(x0)) p_0(x0) by MGDM.

    eps_net(x, t:int) -> eps with t a model time index; acp [T] the model's abar_0..abar_{T-1}. ``fused`` (default True)
    runs the fused ops on ``backend`` (see :func:`gmmkernels.mgdm_vi_step`). Noise: torch.Generator seeded with ``seed``
    (+ the counter-based streams of the fused ops keyed by ``seed``), so the same seed gives the same samples, with or
    without the native extension."""
    cfg = config or MGDMConfig()
    if cfg.tau not in ("mix", "uniform", "deterministic"):
        raise ValueError(f"mgdm: tau must be 'mix', 'uniform' or 'deterministic', got {cfg.tau!r}")
    if cfg.settings not in ("default", "ffhq"):
        raise ValueError(f"mgdm: settings must be 'default' or 'ffhq', got {cfg.settings!r}")
    if cfg.K < 4 or cfg.R < 1 or cfg.M < 1:
        raise ValueError(f"mgdm: need K >= 4, R >= 1, M >= 1, got K={cfg.K}, R={cfg.R}, M={cfg.M}")
    fused = True if fused is None else bool(fused)
    counter = counter if counter is not None else CallCounter()
    dif = _Diffusion(eps_net, acp, cfg.time_index, counter, dtype, device)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    noise = _Noise(fused, int(seed), gen, backend)
    T = dif.T
    timesteps = torch.linspace(0, T - 1, cfg.K).long().tolist()
    F = timesteps[::-1]
    x = torch.randn(tuple(shape), generator=gen, dtype=dtype, device=device)
    x0 = dif.denoise(x, F[0])
    for idx, (t_prev, t, t_next) in enumerate(zip(F[2:-1], F[1:-2], F[:-2])):
        thr = cfg.threshold if cfg.threshold is not None else round(0.7 * cfg.K)
        if cfg.tau == "deterministic" or (cfg.tau == "mix" and idx >= thr) or t_prev <= cfg.min_tau:
            s = t_prev
        else:
            s = int(torch.randint(cfg.min_tau, t_prev, (1,), generator=gen, device=device))
        G, lr = cfg.grad_steps(idx), cfg.learning_rate(idx)
        x_tnext = x
        c0, cl, std = dif.bridge(0, t, t_next, cfg.eta)
        x = noise.bridge(x0, x_tnext, c0, cl, std)
        for _ in range(cfg.R):
            xs = _gauss_vi(dif, noise, log_pot, x0, x, s, t, G, lr, cfg.adam, fused, cfg.vi_scale)
            x0 = _ddim_to_zero(dif, noise, xs, s, cfg.M, cfg.eta)
            cs, cl, std = dif.bridge(s, t, t_next, cfg.eta)
            x = noise.bridge(xs, x_tnext, cs, cl, std)
    return x0


def dps_zeta(gamma: float) -> float:
    """The step on grad ||r|| (``zeta`` of :func:`dps`) that equals DPS's step ``gamma``: Algorithm 1 of Chung et al.
    (and the DPS of the MGDM code) moves x by (gamma / ||r||) grad ||r||^2 = 2 gamma grad ||r||."""
    return 2.0 * float(gamma)


@torch.no_grad()
def dps(eps_net, acp: Tensor, obs: Observation, shape, *, steps: int = 1000, zeta: float = 1.0, seed: int = 0,
        device="cpu", dtype=torch.float32, time_index: str = "fixed", counter: Optional[CallCounter] = None,
        gamma: Optional[float] = None) -> Tensor:
    """Diffusion posterior sampling (Chung et al., ICLR 2023, Algorithm 1): DDPM ancestral steps on a ``steps``-point grid,
    each followed by x <- x - zeta * grad_{x_t} ||y - A(D_t(x_t))|| (per sample). One VJP per step.

    Two names for the step: ``zeta`` multiplies the gradient of the residual norm ||r|| (the ``scale`` of the DPS
    repository's code); ``gamma``, when given, is the step of the paper's Algorithm 1 and of the MGDM code's DPS,
    (gamma / ||r||) grad ||r||^2, and overrides zeta with :func:`dps_zeta` (gamma) = 2 gamma."""
    if gamma is not None:
        zeta = dps_zeta(gamma)
    counter = counter if counter is not None else CallCounter()
    dif = _Diffusion(eps_net, acp, time_index, counter, dtype, device)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    grid = torch.linspace(0, dif.T - 1, steps + 1).long().tolist()
    x = torch.randn(tuple(shape), generator=gen, dtype=dtype, device=device)
    for i in range(steps, 0, -1):
        t, t_prev = grid[i], grid[i - 1]
        with torch.enable_grad():
            xv = x.detach().requires_grad_(True)
            x0 = dif.denoise(xv, t, grad=True)
            nrm = obs.residual_norm(x0)
            (g,) = torch.autograd.grad(nrm.sum(), xv)
        x0 = x0.detach()
        if t_prev == 0:
            x = x0 - zeta * g
            break
        c0, cl, std = dif.bridge(0, t_prev, t, 1.0)
        x = c0 * x0 + cl * x + std * torch.randn(x.shape, generator=gen, dtype=dtype, device=device)
        x = x - zeta * g
    return x

