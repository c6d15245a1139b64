"""SMD: Soft Mixture Denoising (Li, van Breugel, van der Schaar; arXiv 2309.14068); docs/methods.md (SMD).

The reverse kernel is a continuous mixture over a latent z_t = g_xi(x_t, eta, t), eta ~ N(0, I): the denoiser
F_{theta, phi}(x_t, t; z_t) is the usual network with two hypernetwork adapters f_phi (after its input layer and
before its output layer) that turn z_t into per-pixel low-rank-plus-diagonal maps (:class:`HyperAdapter`, the fused
op :func:`gmmkernels.hypernet_adapter`). Training: one eta per data point,

    L = E_{x0, t, eps, eta} w_t || target - F(x_t, t; g_xi(x_t, eta, t)) ||^2,

and sampling draws a fresh eta at every step (DDPM ancestral or DDIM through :mod:`.samplers`).

Two settings (docs/methods.md (SMD)):
  * ``"code"`` (the official code's defaults): v-prediction, sigmoid schedule (lucidrains' ``sigmoid_beta_schedule``,
    start -3, end 3, tau 1, betas clipped to 0.999), loss weight abar_t = SNR / (SNR + 1);
  * ``"paper"``: epsilon-prediction, linear DDPM betas rescaled by 1000 / T (clipped to 0.999), unit weight.

The architecture follows the code: the identifier g_xi is a small network of cat([x_t, eta]) and t (a UNet on
images, an MLP on vectors) with a d_z-dimensional output per pixel; the adapters act per pixel (per sample for
vectors). ``latent_dim=0`` builds the vanilla model (no identifier, no adapters): the baseline.

Entry points: :class:`SMDModel`, :func:`smd_loss`, :func:`train`, :func:`sample`. The experiments (the 7x7 grid
toy and digits; ``gmmkernels reproduce smd`` and the demo section) are in :mod:`gmmkernels.diffusion.experiments.smd`.

A property worth knowing when reading the results: the one-sample loss is minimised, for every x_t, by the
conditional mean E[target | x_t] whatever eta is (eta is independent of (x0, eps), so any eta-dependence of F only
adds variance to the squared error). At the optimum of this objective the denoiser ignores the latent, so the
soft mixture collapses to the usual Gaussian kernel; any gain has to come from the finite-capacity / finite-training
regime. :func:`eta_sensitivity` measures how much a trained model still depends on eta.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ... import hypernet_adapter
from .. import samplers as _samplers
from ..models import UNetEps, default_model, timestep_embedding
from ..schedules import DiscreteSchedule

OBJECTIVES = ("eps", "v")
SETTINGS = {
    "code": dict(objective="v", schedule="sigmoid", weighting="abar"),
    "paper": dict(objective="eps", schedule="linear", weighting="none"),
}


# ----------------------------------------------------------------------------------------------------------
# schedules


def make_smd_schedule(name: str, T: int) -> DiscreteSchedule:
    """The schedule of an SMD setting (:data:`SETTINGS`): ``"sigmoid"`` is the code's sigmoid in abar
    (:meth:`DiscreteSchedule.sigmoid_abar`, start -3, end 3, tau 1), ``"linear"`` the paper's linear betas rescaled by
    1000 / T (:meth:`DiscreteSchedule.linear_rescaled`). Not the schedules of the same names in
    :func:`gmmkernels.diffusion.schedules.make_schedule` (a sigmoid in beta; linear betas without rescaling)."""
    if name == "sigmoid":
        return DiscreteSchedule.sigmoid_abar(T)
    if name == "linear":
        return DiscreteSchedule.linear_rescaled(T)
    raise ValueError(f"smd: schedule must be 'sigmoid' or 'linear', got {name!r}")


# ----------------------------------------------------------------------------------------------------------
# networks


class HyperAdapter(nn.Module):
    """f_phi: h -> h + W_out (W_L ... W_1 (W_in h + b_in)) + b_out, W_l = u_l u_l^T + softplus(s_l) I, u_l = P_l z + q_l.

    Parameters as the code's ``HyperNet``: W_in (nn.Linear(C, d_z)), P_l, q_l (nn.Linear(d_z, d_z) per layer),
    s_l ~ N(0, 1) at init, W_out (nn.Linear(d_z, C)). ``zero_init=True`` zeroes W_out and b_out, so the adapter starts
    as the identity. ``backend`` is that of :func:`gmmkernels.lowrank_adapter` ("reference" reproduces the
    code's materialised form)."""

    def __init__(self, channels: int, latent_dim: int, layers: int = 2, zero_init: bool = False, backend: str = "auto"):
        super().__init__()
        self.backend = backend
        self.inp = nn.Linear(channels, latent_dim)
        lin = [nn.Linear(latent_dim, latent_dim) for _ in range(layers)]
        self.p = nn.Parameter(torch.stack([m.weight.detach() for m in lin]))
        self.q = nn.Parameter(torch.stack([m.bias.detach() for m in lin]))
        self.s = nn.Parameter(torch.randn(layers))
        self.out = nn.Linear(latent_dim, channels)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        return hypernet_adapter(h, z.to(h.dtype), self.inp.weight, self.inp.bias, self.p, self.q, self.s,
                                self.out.weight, self.out.bias, backend=self.backend)


class IdentifierMLP(nn.Module):
    """g_xi for vectors: MLP of cat([x_t, eta]) and a sinusoidal embedding of t -> z [N, d_z]."""

    def __init__(self, dim: int, latent_dim: int, hidden: int = 64, depth: int = 2, t_max: float = 1000.0, emb_dim: int = 32):
        super().__init__()
        self.t_max, self.emb_dim = float(t_max), emb_dim
        layers: List[nn.Module] = [nn.Linear(2 * dim + emb_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, latent_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, eta: Tensor, t: Tensor) -> Tensor:
        N = x.shape[0]
        e = timestep_embedding(t.expand(N) if t.dim() == 0 else t, self.emb_dim, self.t_max).to(x.dtype)
        return self.net(torch.cat([x.reshape(N, -1), eta.reshape(N, -1), e], 1))


class IdentifierUNet(nn.Module):
    """g_xi for images: a small :class:`UNetEps` on cat([x_t, eta]) (2C channels) whose output conv gives d_z channels."""

    def __init__(self, image_shape: Sequence[int], latent_dim: int, ch: int = 8, ch_mult: Sequence[int] = (1, 2),
                 t_max: float = 1000.0):
        super().__init__()
        C, H, W = image_shape
        self.net = UNetEps((2 * C, H, W), ch=ch, ch_mult=ch_mult, n_res=1, t_max=t_max, attention=False)
        cin = self.net.out["eps"].in_channels
        self.net.out["eps"] = nn.Conv2d(cin, latent_dim, 3, padding=1)

    def forward(self, x: Tensor, eta: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, eta], 1), t)


def _io_channels(base: nn.Module) -> tuple:
    inp, out = base.inp, base.out["eps"]
    cin = inp.out_channels if isinstance(inp, nn.Conv2d) else inp.out_features
    cout = out.in_channels if isinstance(out, nn.Conv2d) else out.in_features
    return cin, cout


class SMDModel(nn.Module):
    """Denoiser F_{theta, phi}(x_t, t; z), z = g_xi(x_t, eta, t), around a core network ``base`` (:class:`UNetEps` or
    :class:`~.models.MLPEps` from :mod:`.models`): adapters after ``base.inp`` and before ``base.out['eps']`` (forward hooks;
    ``base`` itself is unchanged and still callable alone). ``latent_dim=0``: the vanilla model (returns base(x, t)).

    ``forward(x, t, eta=None)`` returns the raw prediction in ``objective`` units ("eps" or "v"); a missing eta is
    drawn with ``torch.randn_like``. ``eps(x, t, eta)`` converts to epsilon for the samplers.
    """

    def __init__(self, base: nn.Module, schedule: DiscreteSchedule, *, latent_dim: int = 32, adapter_layers: int = 2,
                 objective: str = "v", identifier: Optional[nn.Module] = None, zero_init: bool = False,
                 backend: str = "auto"):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"SMDModel: objective must be one of {OBJECTIVES}, got {objective!r}")
        if latent_dim < 0:
            raise ValueError(f"SMDModel: latent_dim must be >= 0, got {latent_dim}")
        self.base = base
        self.schedule = schedule
        self.objective = objective
        self.latent_dim = latent_dim
        self.data_shape = tuple(base.data_shape)
        self._z: Optional[Tensor] = None
        if latent_dim:
            if identifier is None:
                if len(self.data_shape) == 3:
                    identifier = IdentifierUNet(self.data_shape, latent_dim, t_max=schedule.t_max)
                else:
                    identifier = IdentifierMLP(math.prod(self.data_shape), latent_dim, t_max=schedule.t_max)
            self.identifier = identifier
            cin, cout = _io_channels(base)
            self.adapter_in = HyperAdapter(cin, latent_dim, adapter_layers, zero_init, backend)
            self.adapter_out = HyperAdapter(cout, latent_dim, adapter_layers, zero_init, backend)
            base.inp.register_forward_hook(self._after_inp)
            base.out["eps"].register_forward_pre_hook(self._before_out)
        else:
            self.identifier = None
        a, s = schedule.a_all.float(), schedule.sigma_all.float()
        self.register_buffer("_a", a, persistent=False)
        self.register_buffer("_s", s, persistent=False)

    @property
    def is_smd(self) -> bool:
        return self.latent_dim > 0

    def _after_inp(self, module, inputs, output):
        return output if self._z is None else self.adapter_in(output, self._z)

    def _before_out(self, module, inputs):
        return inputs if self._z is None else (self.adapter_out(inputs[0], self._z),)

    def latent(self, x: Tensor, t: Tensor, eta: Tensor) -> Tensor:
        return self.identifier(x, eta, t)

    def forward(self, x: Tensor, t: Tensor, eta: Optional[Tensor] = None) -> Tensor:
        if not self.is_smd:
            return self.base(x, t)
        if eta is None:
            eta = torch.randn_like(x)
        self._z = self.latent(x, t, eta)
        try:
            return self.base(x, t)
        finally:
            self._z = None

    def _coef(self, t: Tensor, x: Tensor):
        ti = t.round().long().clamp(0, self.schedule.T)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return self._a[ti].view(shape).to(x.dtype), self._s[ti].view(shape).to(x.dtype)

    def eps(self, x: Tensor, t: Tensor, eta: Optional[Tensor] = None) -> Tensor:
        out = self(x, t, eta)
        if self.objective == "eps":
            return out
        a, s = self._coef(t, x)
        return a * out + s * x  # eps = a v + sigma x_t


def build_smd_model(data_shape: Sequence[int], schedule: DiscreteSchedule, *, smd: bool = True, latent_dim: int = 32,
                    objective: str = "v", size: str = "small", adapter_layers: int = 2, backend: str = "auto",
                    zero_init: bool = False) -> SMDModel:
    """The core's default network for ``data_shape`` wrapped as vanilla (``smd=False``) or SMD."""
    base = default_model(data_shape, schedule.t_max, size=size)
    return SMDModel(base, schedule, latent_dim=latent_dim if smd else 0, adapter_layers=adapter_layers,
                    objective=objective, backend=backend, zero_init=zero_init)


# ----------------------------------------------------------------------------------------------------------
# loss, training, sampling


def smd_loss(model: SMDModel, x0: Tensor, *, weighting: str = "abar", generator: Optional[torch.Generator] = None,
             t: Optional[Tensor] = None, eps: Optional[Tensor] = None, eta: Optional[Tensor] = None) -> Tensor:
    """One-sample estimate of E w_t |target - F(x_t, t; g(x_t, eta, t))|^2 (one t, eps and eta per data point).

    target: eps, or v = a_t eps - sigma_t x0 (``model.objective``); w_t = abar_t (``"abar"``, the code's SNR/(SNR+1))
    or 1 (``"none"``). The per-sample mean over pixels is weighted, then averaged over the batch."""
    if weighting not in ("abar", "none"):
        raise ValueError(f"smd_loss: weighting must be 'abar' or 'none', got {weighting!r}")
    N, dev = x0.shape[0], x0.device
    sch = model.schedule
    if t is None:
        t = torch.randint(1, sch.T + 1, (N,), generator=generator).to(dev).float()
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator).to(dev)
    if eta is None and model.is_smd:
        eta = torch.randn(x0.shape, generator=generator).to(dev)
    a, s = model._coef(t, x0)
    xt = a * x0 + s * eps
    pred = model(xt, t, eta)
    target = eps if model.objective == "eps" else a * eps - s * x0
    per = (pred - target).pow(2).reshape(N, -1).mean(1)
    if weighting == "abar":
        per = per * (a.reshape(N) ** 2)
    return per.mean()


def train(model: SMDModel, data: Tensor, *, steps: int = 2000, batch_size: int = 256, lr: float = 1e-3,
          weighting: str = "abar", ema_decay: float = 0.995, grad_clip: float = 1.0, seed: int = 0,
          log_every: int = 0, device="cpu") -> Dict:
    """Adam (betas 0.9, 0.99 as the code), grad-norm clipping, EMA. All randomness from one seeded generator.
    Returns {"ema": EMA copy of the model, "losses": [...], "seconds": wall time, "steps": steps}."""
    model.to(device).train()
    data = data.float().to(device)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    losses: List[float] = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(data.shape[0], (batch_size,), generator=g).to(data.device)
        loss = smd_loss(model, data[idx], weighting=weighting, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1.0 - ema_decay)
        losses.append(loss.detach().item())
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps} loss {sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    model.eval()
    return {"ema": ema, "losses": losses, "seconds": time.perf_counter() - t0, "steps": steps}


LATENTS = ("fresh", "zero")


@torch.no_grad()
def sample(model: SMDModel, n: int, *, method: str = "ddpm", K: Optional[int] = None,
           generator: Optional[torch.Generator] = None, clip_x0: Optional[float] = None, device="cpu",
           batch_size: Optional[int] = None, latent: str = "fresh") -> Tensor:
    """Draw n samples with the core's ``ddpm`` (ancestral; K = T by default) or ``ddim`` (eta = 0) sampler.

    ``latent="fresh"`` draws a fresh eta ~ N(0, I) at every network call (the soft mixture, as the official sampler);
    ``latent="zero"`` feeds eta = 0 at every call, which takes the mixture out of the same network (a control).
    Randomness: ``generator`` gives two seeds, one for x_T and the step noise, one for the etas, so two models sampled
    with the same ``generator`` seed share x_T and every step's noise whatever they do with eta (common random
    numbers: a vanilla model, an SMD model and the same SMD model with ``latent="zero"`` are paired draw for draw)."""
    if method not in ("ddpm", "ddim"):
        raise ValueError(f"smd.sample: method must be 'ddpm' or 'ddim', got {method!r}")
    if latent not in LATENTS:
        raise ValueError(f"smd.sample: argument 'latent' must be one of {LATENTS}, got {latent!r}")
    device = torch.device(device)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    seeds = torch.randint(0, 2**62, (2,), generator=g).tolist()
    # generators on the sampling device (the core samplers draw their step noise on x's device)
    step_gen = torch.Generator(device=device).manual_seed(seeds[0])
    eta_gen = torch.Generator(device=device).manual_seed(seeds[1])
    model = model.to(device).eval()
    outs = []
    bs = batch_size or n
    for i in range(0, n, bs):
        m = min(bs, n - i)

        def eps_fn(x, t):
            if not model.is_smd:
                return model.eps(x, t)
            if latent == "zero":
                return model.eps(x, t, torch.zeros_like(x))
            return model.eps(x, t, torch.randn(x.shape, generator=eta_gen, device=x.device, dtype=x.dtype))

        x_T = torch.randn((m, *model.data_shape), generator=step_gen, device=device)
        outs.append(_samplers.sample(eps_fn, model.schedule, (m, *model.data_shape), method, K, generator=step_gen,
                                     x_T=x_T, clip_x0=clip_x0, device=device))
    return torch.cat(outs).cpu()


def _noised_batch(model: SMDModel, data: Tensor, n: int, t: int, g: torch.Generator):
    dev = next(model.parameters()).device
    x0 = data[torch.randint(data.shape[0], (n,), generator=g)].float().to(dev)
    tt = torch.full((n,), float(t), device=dev)
    a, s = model._coef(tt, x0)
    return a * x0 + s * torch.randn(x0.shape, generator=g).to(dev), tt, a, s


def _default_times(T: int, times: Sequence[int]) -> List[int]:
    return list(times) or sorted({max(1, T // 10), max(1, T // 2), T})


@torch.no_grad()
def eta_sensitivity(model: SMDModel, data: Tensor, *, n: int = 512, n_eta: int = 8, times: Sequence[int] = (),
                    seed: int = 0, units: str = "prediction") -> Dict[str, float]:
    """How much the trained denoiser depends on the latent: mean over x_t of the across-eta std of the prediction,
    relative to the std of the prediction across x_t, at a few times t (0 for a vanilla model; empty dict for one).

    ``units="prediction"`` measures the network's own output (v or eps, ``model.objective``); ``"eps"`` converts to
    epsilon first. Under v-prediction eps = a_t v + sigma_t x_t, so at t = T (a_T ~ 0) the eps units hide any
    dependence on eta by construction: use the prediction's units there."""
    if units not in ("prediction", "eps"):
        raise ValueError(f"eta_sensitivity: argument 'units' must be 'prediction' or 'eps', got {units!r}")
    if not model.is_smd:
        return {}
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    out = {}
    for t in _default_times(model.schedule.T, times):
        xt, tt, _, _ = _noised_batch(model, data, n, t, g)
        f = model if units == "prediction" else model.eps
        preds = torch.stack([f(xt, tt, torch.randn(xt.shape, generator=g).to(dev)) for _ in range(n_eta)])
        within = preds.std(0).mean()
        across = preds.mean(0).std(0).mean().clamp_min(1e-12)
        out[f"t={t}"] = float(within / across)
    return out


@torch.no_grad()
def mixture_spread(model: SMDModel, data: Tensor, *, n: int = 512, n_eta: int = 8, times: Sequence[int] = (),
                   seed: int = 0) -> Dict[str, float]:
    """How far apart the components of the soft mixture p(x_{t-1} | x_t) = E_eta N(mu(x_t, eta), lambda_t^2 I) are:
    the mean over x_t (noised data) and pixels of the across-eta std of the component mean mu = A x_t + B x0_hat(eta)
    (DDPM posterior of the step t -> t-1), divided by the component std lambda_t. A mixture whose components spread
    by much less than one component std is a single Gaussian in all but name; ~1 or more is needed for several
    modes. Times t >= 2 (the step to t = 0 has lambda = 0); default T/10, T/2, T. Empty dict for a vanilla model."""
    if not model.is_smd:
        return {}
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    sch = model.schedule
    out = {}
    for t in sorted({max(2, t) for t in _default_times(sch.T, times)}):
        xt, tt, a, s = _noised_batch(model, data, n, t, g)
        A, B, lam2 = (float(v) for v in sch.posterior(float(t), float(t - 1)))
        x0s = []
        for _ in range(n_eta):
            pred = model(xt, tt, torch.randn(xt.shape, generator=g).to(dev))
            x0s.append(a * xt - s * pred if model.objective == "v" else (xt - s * pred) / a)
        spread = (B * torch.stack(x0s).std(0)).mean()
        out[f"t={t}"] = float(spread / max(lam2, 1e-30) ** 0.5)
    return out
