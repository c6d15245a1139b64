"""GMS: Gaussian Mixture Solvers (Guo, Lu, Bao, Pang, Yan, Du, Li; NeurIPS 2023, arXiv 2311.00941), end to end.

The sampler and head training follow the official code (``Guohanzhong/GMS``, ``sample.py`` / ``diffusion.py``) as
written down in docs/methods.md (GMS), not the paper where the two differ:

* Every reverse transition t -> s is a two-component mixture per element, w N(mu1, v) + (1 - w) N(mu2, v) with
  w = 1/3 fixed and one shared variance v = V clamp(beta, 0.1, 1.2), whose (mu1, mu2, beta) match the first three
  moments of x_s | x_t. The moments come from the heads e_n = E[eps^n | x_t] (n = 1, 2, 3) with the official clamps
  (E0 in [-1, 1], Var0 in [0, 1], E2 in [0, 1], the |E3| <= |E0| heuristic, E3 in [-1, 1], V in [0, 1]), so the data
  must live in [-1, 1] (images; the toys below are rescaled into it).
* The fit is the official Adan solver (lr 0.06, 70 iterations, 1/n_el gradient scale over the whole batch:
  ``fit="adan"``, the default) or the exact closed form with the same variance floor (``fit="closed"``, a variant).
* The component is drawn once per image (``per_image=True``, the official ``sample.py``) or independently per
  element (``per_image=False``, the legacy ``diffusion.py`` and the paper's per-dimension kernel); x_s = mu_k + sqrt(v) z
  with the same z for either component.
* The last transition (to s = 0 here; to the official t = 0 there) is Gaussian with the SN-DDPM variance clipped to
  ``last_var_max`` (the official clip is (clip_pixel * 2/255 * sqrt(pi/2))^2, :func:`official_last_var`).
* One network evaluation per step returns all three heads (the official ``merge_model`` layout: one backbone pass,
  three outputs), so GMS costs the same NFE as SN-DDPM.

The per-step work (moments -> fit -> component -> draw) is ONE call of the fused op :func:`gmmkernels.gms_step`,
with its in-kernel counter-based RNG: the sampler draws x_T and one 64-bit seed from ``generator`` and uses the step
index as the Philox offset, so a seeded generator gives identical samples.

Grid and times: the package's convention (t = 0 is the data, integer t = 1..T, ``schedule.grid(K)``: t_K = T > ... >
t_1 > t_0 = 0), the same grid as DDPM / SN-DDPM in :mod:`.samplers`, so the three are compared at equal NFE (K).
The official loop also ends with a clipped Gaussian step and a final x0 prediction; here the last Gaussian step goes
straight to s = 0, where its mean is the clipped x0 prediction and its variance Var[x0 | x_t] (clipped).

Training (docs/methods.md (GMS)): head n >= 2 is trained with mse(h_n(x_t, t), eps^n) on a FROZEN eps-backbone
(:class:`GMSHeads`, :func:`train_gms_heads`; ``mode='complex'``: a time-conditioned residual block then norm, SiLU and
a zero-initialised output layer, as the official eps2/eps3 heads; ``'simple'``: norm, SiLU, zero-initialised output).
The official code trains eps2 first, then eps3 with eps2 frozen; the two heads have disjoint parameters and separate
losses, so training them together is the same optimisation up to the shared gradient-norm clip. The merged option
(:func:`train_merged_model`) instead trains one network with three heads from scratch (eps + eps2 + eps3 losses).

What the official fit does (measured with :func:`fit_diagnostics`, see ``reproduce_gms``): started at
mu2 = mu1 - 1e-3, the Adan solver hardly separates the two components, because the gradient of J along mu1 - mu2 vanishes
like (mu1 - mu2)^2 near 0 (the third-moment residual is cubic in the separation). It moves mu and beta instead, so the
official kernel is close to a Gaussian with a shifted mean and a rescaled variance (v / V != 1); the closed form does
separate the components. Both are provided; the comparison tables report both.

Entry points: :func:`gms_sample` (and :data:`SAMPLERS` / :func:`run_sampler` for the comparison with DDPM and
SN-DDPM), :class:`GMSHeads`, :func:`train_gms_heads`, :func:`train_merged_model`. The experiments
(``gmmkernels reproduce gms`` and the demo section) are in :mod:`gmmkernels.diffusion.experiments.gms`.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import GMSCoeffs, _validate as V, gms_step
from .. import samplers as _samplers
from ..models import MLPEps, ResBlock, UNetEps, default_model, norm_groups
from ..oracle import heads_dict
from ..schedules import Schedule
from ..trainer import TrainConfig, Trainer

FITS = ("adan", "closed")
HEAD_MODES = ("simple", "complex")
#: sampler names of :func:`run_sampler`
SAMPLERS = ("ddpm", "sn_ddpm", "gms", "gms_closed", "gms_element")
SAMPLER_LABELS = {
    "ddpm": "DDPM (small var)",
    "sn_ddpm": "SN-DDPM",
    "gms": "GMS (Adan fit, per image; official)",
    "gms_closed": "GMS (closed-form fit, per image)",
    "gms_element": "GMS (Adan fit, per element)",
}
#: ablations of :func:`run_sampler` (name: fit, merge the two fitted components into their mean, variance factor):
#: which part of a GMS step helps, the mixture or the change of variance? See :func:`ablation_sample`.
ABLATIONS = {
    "sn_fused": ("gaussian", False, 1.0),
    "sn_fused_v95": ("gaussian", False, 0.95),
    "sn_fused_v90": ("gaussian", False, 0.90),
    "gms_merged": ("adan", True, 1.0),
}
SAMPLER_LABELS.update({
    "sn_fused": "ablation: N(M1, V) on GMS's clamped moments",
    "sn_fused_v95": "ablation: N(M1, 0.95 V)",
    "sn_fused_v90": "ablation: N(M1, 0.90 V)",
    "gms_merged": "ablation: GMS Adan fit, components merged",
})


def official_last_var(clip_pixel: float = 2.0) -> float:
    """The official cap on the last-step variance, (clip_pixel * 2/255 * sqrt(3.14159/2))^2 (CIFAR10 linear: 2)."""
    return (clip_pixel * 2.0 / 255.0 * math.sqrt(3.14159 / 2.0)) ** 2


# ----------------------------------------------------------------------------------------------------------
# the sampler


def _check_K(fn: str, schedule: Schedule, K) -> int:
    if isinstance(K, bool) or not isinstance(K, int):
        raise ValueError(f"{fn}: argument 'K' must be an int, got {K!r}")
    if schedule.continuous:
        if K < 1:
            raise ValueError(f"{fn}: argument 'K' must be >= 1, got {K}")
    elif not 1 <= K <= schedule.T:
        raise ValueError(f"{fn}: argument 'K' must be an int in [1, T={schedule.T}] for this schedule, got {K}")
    return K


def _heads(fn: str, model, x: Tensor, t: float, cond) -> Dict[str, Tensor]:
    tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    kw = {"heads": True}
    if cond is not None:
        kw["cond"] = cond
    out = heads_dict(model(x, tt, **kw))
    missing = [h for h in ("eps", "eps2", "eps3") if h not in out]
    if missing:
        raise ValueError(f"{fn}: argument 'model' must return the heads 'eps', 'eps2', 'eps3' when called with "
                         f"heads=True; missing {missing} (got {sorted(out)})")
    for name in ("eps", "eps2", "eps3"):
        h = out[name]
        if not isinstance(h, Tensor) or tuple(h.shape) != tuple(x.shape):
            shp = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"{fn}: argument 'model': head '{name}' has shape {shp} but x has shape {tuple(x.shape)}")
    return {k: out[k].to(x.dtype) for k in ("eps", "eps2", "eps3")}


@torch.no_grad()
def _kernel_seed(generator: Optional[torch.Generator]) -> int:
    """The one 64-bit seed of the fused step's in-kernel RNG, drawn from ``generator`` (torch's default CPU generator
    when None)."""
    gdev = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 1 << 62, (1,), generator=generator, device=gdev))


def _check_seed(fn: str, seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{fn}: argument 'seed' must be None or an int (its 64 bits are the key), got {seed!r}")
    return seed


def _step_coeffs(schedule: Schedule, ts: Tensor, i: int) -> Tuple[float, float, GMSCoeffs]:
    """(t, s, coefficients) of step i of the time grid ``ts`` (transition t = ts[i] -> s = ts[i + 1])."""
    t, s = float(ts[i]), float(ts[i + 1])
    a_t, sig_t = (float(v) for v in schedule.alpha_sigma(t))
    return t, s, GMSCoeffs(a_t, sig_t, *(float(v) for v in schedule.posterior(t, s)))


def gms_sample(model, schedule: Schedule, shape: Sequence[int], K: Optional[int] = None, *,
               generator: Optional[torch.Generator] = None, x_T: Optional[Tensor] = None, cond=None,
               fit: str = "adan", per_image: bool = True, weight: float = 1.0 / 3.0, iters: int = 70, lr: float = 0.06,
               var_floor: float = 0.1, n_el: Optional[int] = None, last_var_max: Optional[float] = None,
               spacing: str = "uniform", device=None, dtype: torch.dtype = torch.float32, backend: str = "auto",
               progress: bool = False, return_trajectory: bool = False, seed: Optional[int] = None):
    """Draw ``shape[0]`` samples with the GMS sampler in K steps (docs/methods.md (GMS)).

    Args:
      model: callable ``model(x, t, heads=True[, cond=])`` returning a dict with 'eps', 'eps2', 'eps3' of x's shape
        (a :class:`GMSHeads`, a network built with heads=("eps", "eps2", "eps3"), or a :class:`MixtureOracle`,
        whose heads are the exact conditional moments).
      schedule: a DiscreteSchedule or VPSDE; K: number of steps (default T, or 100 for the VP-SDE), K <= T.
      generator: source of x_T and of the one 64-bit seed of the in-kernel RNG (same seed -> same samples).
      x_T: start noise (default N(0, I) from ``generator``); cond: passed to the model.
      fit: "adan" (the official solver, default) or "closed" (the exact closed form, a variant); see gms_fit.
      per_image: True draws the component once per leading index (the official sampler); False per element.
      weight, iters, lr, var_floor, n_el: the fit's parameters (official: 1/3, 70, 0.06, 0.1, the batch's numel).
      last_var_max: cap on the variance of the last (Gaussian) step, None for no cap; the official value is
        :func:`official_last_var` (CIFAR10).
      spacing: time grid ('uniform' or 'quadratic'); dtype: dtype of x and of the fused step.
      backend: backend of gms_step ("auto" | "reference" | "cpu" | "cuda").
      seed: the 64-bit seed of the in-kernel RNG (default: drawn from ``generator`` after x_T). Step i draws its
        normals and component choices at Philox offset i, so a Gaussian sampler given
        ``noise=samplers.counter_noise(seed)`` and this x_T shares every random number with this sampler.
    Returns x0 [shape], or (x0, [x_{t_K}, ..., x_{t_0}]) with ``return_trajectory``.
    """
    fn = "gms_sample"
    if not callable(model):
        raise TypeError(f"{fn}: argument 'model' must be callable as model(x, t, heads=True)")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"{fn}: argument 'schedule' must be a DiscreteSchedule or VPSDE, got {type(schedule).__name__}")
    if fit not in FITS:
        raise ValueError(f"{fn}: argument 'fit' must be one of {FITS}, got {fit!r}")
    V.number(fn, "weight", weight, lo=0.0, hi=1.0, lo_open=True, hi_open=True, what="a number in (0, 1)")
    per_image = V.flag(fn, "per_image", per_image)
    if last_var_max is not None and not (isinstance(last_var_max, (int, float)) and last_var_max >= 0):
        raise ValueError(f"{fn}: argument 'last_var_max' must be None or a number >= 0, got {last_var_max!r}")
    if K is None:
        K = schedule.T if not schedule.continuous else 100
    K = _check_K(fn, schedule, K)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"{fn}: argument 'shape' must be (N, ...) with N >= 1, got {shape}")
    if x_T is not None and tuple(x_T.shape) != shape:
        raise ValueError(f"{fn}: argument 'x_T' has shape {tuple(x_T.shape)} but shape is {shape}")
    ts = schedule.grid(K, spacing)
    x = _samplers.start_noise(shape, x_T, generator, device, dtype)
    seed = _kernel_seed(generator) if seed is None else _check_seed(fn, seed)
    traj: List[Tensor] = [x.clone()] if return_trajectory else []
    for i in _samplers.progress_bar(range(K), progress, f"gms K={K}"):
        t, s, c = _step_coeffs(schedule, ts, i)
        h = _heads(fn, model, x, t, cond)
        if s == 0.0:  # the last transition: Gaussian, variance clipped (official `t - ratio <= 0` branch)
            x = gms_step(x, h["eps"], h["eps2"], h["eps3"], c, method="gaussian", per_image=per_image, seed=seed,
                         offset=i, var_clip=last_var_max, backend=backend)
        else:
            x = gms_step(x, h["eps"], h["eps2"], h["eps3"], c, method=fit, weight=weight, per_image=per_image,
                         seed=seed, offset=i, iters=iters, lr=lr, var_floor=var_floor, n_el=n_el, backend=backend)
        if return_trajectory:
            traj.append(x.clone())
    return (x, traj) if return_trajectory else x


def ablation_sample(model, schedule: Schedule, shape: Sequence[int], K: int, variant: str, *,
                    generator: Optional[torch.Generator] = None, weight: float = 1.0 / 3.0,
                    last_var_max: Optional[float] = None, device=None, dtype: torch.dtype = torch.float32,
                    backend: str = "auto", x_T: Optional[Tensor] = None, seed: Optional[int] = None) -> Tensor:
    """A GMS sampler with one part taken out, to tell which part of a GMS step matters (``variant`` in
    :data:`ABLATIONS`). Every step but the last computes the fused step's moments (official clamps) and fit with
    ``return_params``, then draws x_s = m + sqrt(c v) z with z the fused step's own normals of that step (the
    counter-based stream at (seed, element, offset i, tag 7), :func:`gmmkernels.diffusion.samplers.counter_noise`):
      sn_fused:        fit "gaussian": m = M1, v = V (SN-DDPM on GMS's clamped moments), c = 1;
      sn_fused_v95/90: the same with the variance scaled by c = 0.95 / 0.90;
      gms_merged:      the official Adan fit, but the two components merged: m = w mu1 + (1 - w) mu2 and v the fitted
                       (within-component) variance, c = 1: GMS's variance without its mixture.
    The last step is the Gaussian step of :func:`gms_sample` (capped by ``last_var_max``). x_T (default: drawn from
    ``generator``) and the kernel ``seed`` (default: drawn from ``generator`` after x_T) are those of
    :func:`gms_sample`, so an ablation, GMS and a Gaussian sampler given ``noise=counter_noise(seed)`` share x_T and
    every step's normals (common random numbers)."""
    fn = "ablation_sample"
    if variant not in ABLATIONS:
        raise ValueError(f"{fn}: argument 'variant' must be one of {tuple(ABLATIONS)}, got {variant!r}")
    fit, merge, c = ABLATIONS[variant]
    K = _check_K(fn, schedule, K)
    shape = tuple(int(v) for v in shape)
    if x_T is not None and tuple(x_T.shape) != shape:
        raise ValueError(f"{fn}: argument 'x_T' has shape {tuple(x_T.shape)} but shape is {shape}")
    ts = schedule.grid(K, "uniform")
    x = _samplers.start_noise(shape, x_T, generator, device, dtype)
    seed = _kernel_seed(generator) if seed is None else _check_seed(fn, seed)
    z = _samplers.counter_noise(seed)
    for i in range(K):
        t, s, co = _step_coeffs(schedule, ts, i)
        h = _heads(fn, model, x, t, None)
        if s == 0.0:
            x = gms_step(x, h["eps"], h["eps2"], h["eps3"], co, method="gaussian", seed=seed, offset=i,
                         var_clip=last_var_max, backend=backend)
            continue
        st = gms_step(x, h["eps"], h["eps2"], h["eps3"], co, method=fit, weight=weight, seed=seed, offset=i,
                      return_params=True, backend=backend)
        m = weight * st.mu1 + (1.0 - weight) * st.mu2 if merge else st.mu1
        x = m + (c * st.var).clamp_min(0.0).sqrt() * z(i, x)
    return x


def run_sampler(name: str, model, schedule: Schedule, shape: Sequence[int], K: int, *, seed: int = 0,
                clip_x0: float = 1.0, last_var_max: Optional[float] = None, dtype: torch.dtype = torch.float32,
                device=None, batch_size: Optional[int] = None, backend: str = "auto",
                common_noise: bool = True) -> Tensor:
    """One of :data:`SAMPLERS` or :data:`ABLATIONS` with a common setup: x0 clipped to [-clip_x0, clip_x0] for DDPM /
    SN-DDPM (GMS always clips to [-1, 1], as the official moments), the same last-step variance cap for SN-DDPM and
    GMS, and common random numbers: a generator seeded with ``seed`` gives x_T and then one kernel seed, and every
    sampler takes its step-i noise from the counter-based stream of that kernel seed at offset i (GMS and the
    ablations through the fused step, DDPM / SN-DDPM through ``noise=counter_noise(kernel seed)``), GMS also its
    component choices. So two samplers run with one ``seed`` share every random number they both draw, and two
    samplers with the same kernel give the same samples up to rounding. ``common_noise=False``: DDPM / SN-DDPM draw
    their step noise from the generator instead (x_T is still shared). ``batch_size`` splits large draws (each chunk
    gets its own seed; note that the official Adan fit's 1/n_el scale is then the chunk's)."""
    if name not in SAMPLERS and name not in ABLATIONS:
        raise ValueError(f"run_sampler: argument 'name' must be one of {SAMPLERS + tuple(ABLATIONS)}, got {name!r}")
    shape = tuple(shape)
    N = shape[0]
    bs = N if batch_size is None else V.integer("run_sampler", "batch_size", batch_size, lo=1,
                                                 what="None or a positive int")
    outs = []
    for j, n0 in enumerate(range(0, N, bs)):
        n = min(bs, N - n0)
        g = torch.Generator(device=device if device is not None else "cpu").manual_seed(seed * 1000003 + j)
        sh = (n, *shape[1:])
        if name in ("ddpm", "sn_ddpm") and not common_noise:
            outs.append(_samplers.sample(model, schedule, sh, name, K, generator=g, clip_x0=clip_x0,
                                         last_var_max=last_var_max, device=device, dtype=dtype))
            continue
        x_T = _samplers.start_noise(sh, None, g, device, dtype)
        kseed = _kernel_seed(g)
        if name in ABLATIONS:
            outs.append(ablation_sample(model, schedule, sh, K, name, x_T=x_T, seed=kseed, last_var_max=last_var_max,
                                        device=device, dtype=dtype, backend=backend))
        elif name in ("ddpm", "sn_ddpm"):
            outs.append(_samplers.sample(model, schedule, sh, name, K, x_T=x_T, noise=_samplers.counter_noise(kseed),
                                         clip_x0=clip_x0, last_var_max=last_var_max, device=device, dtype=dtype))
        else:
            fit = "closed" if name == "gms_closed" else "adan"
            outs.append(gms_sample(model, schedule, sh, K, x_T=x_T, seed=kseed, fit=fit,
                                   per_image=name != "gms_element", last_var_max=last_var_max, device=device,
                                   dtype=dtype, backend=backend))
    return torch.cat(outs)


# ----------------------------------------------------------------------------------------------------------
# heads on a frozen backbone


class GMSHeads(nn.Module):
    """A frozen eps-backbone (:class:`MLPEps` or :class:`UNetEps`) plus trainable eps2 / eps3 heads, one module.

    ``model(x, t)`` returns the backbone's eps; ``model(x, t, heads=True)`` returns {"eps", "eps2", "eps3"} from ONE
    backbone pass (the official ``merge_model`` layout). The heads read the backbone's last feature map (the input of
    its output norm) and its time(+condition) embedding:
      mode='complex': residual block with the embedding (a :class:`ResBlock` on images, a LayerNorm-Linear-SiLU-Linear
                      block on vectors) -> norm -> SiLU -> zero-initialised output layer (official eps2/eps3 heads);
      mode='simple':  norm -> SiLU -> zero-initialised output layer.
    The backbone is frozen (requires_grad False, always in eval mode); only the heads train.
    """

    def __init__(self, backbone: nn.Module, mode: str = "complex", heads: Sequence[str] = ("eps2", "eps3")):
        super().__init__()
        fn = "GMSHeads"
        if not isinstance(backbone, (MLPEps, UNetEps)):
            raise TypeError(f"{fn}: argument 'backbone' must be an MLPEps or UNetEps, got {type(backbone).__name__}")
        if mode not in HEAD_MODES:
            raise ValueError(f"{fn}: argument 'mode' must be one of {HEAD_MODES}, got {mode!r}")
        heads = tuple(heads)
        if not heads or any(h not in ("eps2", "eps3") for h in heads) or len(set(heads)) != len(heads):
            raise ValueError(f"{fn}: argument 'heads' must be distinct names among ('eps2', 'eps3'), got {heads}")
        self.backbone = backbone.requires_grad_(False).eval()
        self.mode = mode
        self.head_names = heads
        self.heads = ("eps",) + heads
        self.data_shape = backbone.data_shape
        self.is_image = isinstance(backbone, UNetEps)
        emb = backbone.embed.emb_dim
        if self.is_image:
            ch = backbone.out_norm.num_channels
            C = backbone.data_shape[0]
        else:
            ch = backbone.out_norm.normalized_shape[0]
            C = backbone.dim
        self.head = nn.ModuleDict({h: self._make_head(ch, C, emb) for h in heads})

    def _make_head(self, ch: int, C: int, emb: int) -> nn.Module:
        m = nn.ModuleDict()
        if self.is_image:
            if self.mode == "complex":
                m["block"] = ResBlock(ch, ch, emb, 0.0)
            m["norm"] = nn.GroupNorm(norm_groups(ch), ch)
            m["out"] = nn.Conv2d(ch, C, 3, padding=1)
        else:
            if self.mode == "complex":
                m["bnorm"] = nn.LayerNorm(ch)
                m["fc1"] = nn.Linear(ch, ch)
                m["emb"] = nn.Linear(emb, ch)
                m["fc2"] = nn.Linear(ch, ch)
            m["norm"] = nn.LayerNorm(ch)
            m["out"] = nn.Linear(ch, C)
        nn.init.zeros_(m["out"].weight)
        nn.init.zeros_(m["out"].bias)
        return m

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def _apply_head(self, m: nn.ModuleDict, h: Tensor, e: Tensor, shape) -> Tensor:
        if self.is_image:
            if "block" in m:
                h = m["block"](h, e)
            return m["out"](F.silu(m["norm"](h)))
        if "fc1" in m:
            h = h + m["fc2"](F.silu(m["fc1"](m["bnorm"](h)) + m["emb"](e)))
        return m["out"](F.silu(m["norm"](h))).reshape(shape)

    def forward(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None, heads: bool = False):
        kw = {"cond": cond} if cond is not None else {}
        if not heads:
            with torch.no_grad():
                return self.backbone(x, t, **kw)
        feat: Dict[str, Tensor] = {}
        # hooks only for this call (so deep copies, e.g. the trainer's EMA, need no special care)
        hooks = [self.backbone.out_norm.register_forward_pre_hook(lambda m, inp: feat.__setitem__("h", inp[0])),
                 self.backbone.embed.register_forward_hook(lambda m, inp, o: feat.__setitem__("e", o))]
        try:
            with torch.no_grad():
                eps = self.backbone(x, t, **kw)
        finally:
            for hk in hooks:
                hk.remove()
        h, e = feat["h"].detach(), feat["e"].detach()
        out = {"eps": eps}
        for name in self.head_names:
            out[name] = self._apply_head(self.head[name], h, e, x.shape)
        return out


class _HeadTrainer(Trainer):
    """The diffusion-core trainer with the loss restricted to the trainable heads:
    L = sum_{n in heads} w_n mean |h_n(x_t, t) - eps^n|^2 (docs/methods.md (GMS); the frozen eps term is left out)."""

    def loss(self, x0: Tensor, t: Tensor, eps: Tensor, cond=None) -> Tensor:
        kw = {"cond": cond} if cond is not None else {}
        out = heads_dict(self.net(self.noised(x0, t, eps), t, heads=True, **kw))
        return self.moment_head_loss(out, eps, self.model.head_names)


def train_gms_heads(backbone: nn.Module, schedule: Schedule, data: Tensor, *, mode: str = "complex",
                    heads: Sequence[str] = ("eps2", "eps3"), steps: int = 1000, batch_size: int = 128,
                    lr: float = 1e-3, ema_decay: float = 0.995, warmup: int = 0, grad_clip: Optional[float] = 1.0,
                    seed: int = 0, labels: Optional[Tensor] = None, device="cpu", progress: bool = False,
                    log_every: int = 0):
    """Train the eps2 / eps3 heads (targets eps^2, eps^3, elementwise) on the frozen ``backbone``.

    Returns (model, trainer): ``model`` the EMA :class:`GMSHeads` in eval mode (use it for sampling), ``trainer`` the
    :class:`Trainer` (its ``history`` holds the head loss every ``log_every`` steps)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"train_gms_heads: argument 'steps' must be an int >= 0, got {steps!r}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GMSHeads(backbone, mode=mode, heads=heads)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, warmup=warmup,
                      grad_clip=grad_clip, seed=seed, log_every=log_every, progress=progress,
                      conditional=labels is not None)
    tr = _HeadTrainer(model, schedule, data, cfg, labels=labels, device=device)
    tr.train()
    return tr.ema.eval(), tr


def train_backbone(data: Tensor, schedule: Schedule, *, steps: int = 2000, arch: Optional[str] = None,
                   size: str = "small", batch_size: int = 128, lr: float = 2e-3, ema_decay: float = 0.995,
                   warmup: int = 100, seed: int = 0, device="cpu", progress: bool = False, log_every: int = 0,
                   heads: Sequence[str] = ("eps",)):
    """Train an eps-network (``heads=("eps", "eps2", "eps3")`` gives the merged model) with the core trainer.
    Returns (EMA model in eval mode, trainer)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = default_model(tuple(data.shape[1:]), schedule.t_max, arch=arch, size=size, heads=heads)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, warmup=min(warmup, steps),
                      seed=seed, log_every=log_every, progress=progress)
    tr = Trainer(model, schedule, data, cfg, device=device)
    tr.train()
    return tr.ema.eval(), tr


def train_merged_model(data: Tensor, schedule: Schedule, **kw):
    """The merged option: ONE network with the heads eps, eps2, eps3 trained jointly from scratch with
    L = |h1 - eps|^2 + |h2 - eps^2|^2 + |h3 - eps^3|^2 (the core trainer's multi-head loss). Not the official recipe
    (which freezes the eps-backbone), but one training run instead of two. Returns (EMA model, trainer)."""
    return train_backbone(data, schedule, heads=("eps", "eps2", "eps3"), **kw)


# ----------------------------------------------------------------------------------------------------------
# what the fit does


@torch.no_grad()
def fit_diagnostics(model, schedule: Schedule, x0: Tensor, K: int, *, seed: int = 0, n_el: Optional[int] = None,
                    backend: str = "auto") -> List[Dict]:
    """Per GMM step of the K-step grid: x_t = a_t x0 + sigma_t eps from data ``x0`` (the exact marginal), the heads of
    ``model``, then the fused step's fit with the official Adan solver and with the closed form. Reports the mean
    component separation |mu1 - mu2| / sqrt(V) and the mean fitted variance ratio v / V (V = the SN-DDPM variance);
    a Gaussian (SN-DDPM) kernel has separation 0 and ratio 1."""
    _check_K("fit_diagnostics", schedule, K)
    ts = schedule.grid(K)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(K - 1):
        t, s, c = _step_coeffs(schedule, ts, i)
        x = c.a_t * x0 + c.sigma_t * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        h = _heads("fit_diagnostics", model, x, t, None)
        V = gms_step(x, h["eps"], h["eps2"], h["eps3"], c, method="gaussian", seed=0, return_params=True,
                     backend=backend).var.double().clamp_min(1e-30)
        rec = {"t": t, "s": s, "mean_V": float(V.mean())}
        for fit in FITS:
            st = gms_step(x, h["eps"], h["eps2"], h["eps3"], c, method=fit, seed=0, n_el=n_el, return_params=True,
                          backend=backend)
            rec[f"sep_{fit}"] = float(((st.mu1 - st.mu2).double().abs() / V.sqrt()).mean())
            rec[f"var_ratio_{fit}"] = float((st.var.double() / V).mean())
        out.append(rec)
    return out
