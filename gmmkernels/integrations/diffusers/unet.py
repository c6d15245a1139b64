"""A diffusers ``UNet2DModel`` as the network of the project's samplers and methods, and the GMS moment heads on it.

* :class:`DiffusersEpsModel` maps the project's call ``model(x, t)`` (t in schedule units, 1..T) to the UNet's
  ``unet(x, t - 1)`` and its prediction type to epsilon (v: eps = a_t v + sigma_t x_t; sample: eps = (x_t - a_t
  x0) / sigma_t), so :func:`gmmkernels.diffusion.samplers.sample`, GMS, MGDM / DPS and SMD run on any diffusers UNet.
  ``eps_at_index(x, i)`` is the same network at a diffusers timestep index (MGDM's and DPS's convention).
* :class:`MomentHeads` (a diffusers ``ModelMixin``: ``save_pretrained`` / ``from_pretrained``) are GMS's extra heads
  h_n ~ E[eps^n | x_t], n = 2, 3 (docs/methods.md (GMS)), read from the UNet's last feature map (the input of its
  ``conv_norm_out``) and time embedding; :class:`UNetWithMomentHeads` is the frozen UNet plus the heads, called like
  a UNet (``model(sample, timestep).sample``, the heads stacked on the channels) so that a diffusers pipeline loop
  feeds them to :class:`~.gms.GMSScheduler`; :func:`train_moment_heads` trains the heads on the frozen UNet with the
  project's trainer.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import Tensor, nn

from ...diffusion.models import ResBlock, norm_groups
from ...diffusion.schedules import DiscreteSchedule
from ...diffusion.trainer import TrainConfig, Trainer
from .schedules import PREDICTION_TYPES, schedule_from_diffusers

__all__ = ["DiffusersEpsModel", "MomentHeads", "UNetWithMomentHeads", "train_moment_heads", "to_eps"]

MOMENT_HEADS = ("eps2", "eps3")


def to_eps(out: Tensor, x: Tensor, abar: Tensor, prediction_type: str) -> Tensor:
    """The epsilon prediction from a network output in ``prediction_type`` units; ``abar`` [N] float64 per sample."""
    if prediction_type == "epsilon":
        return out
    shape = (-1,) + (1,) * (x.dim() - 1)
    a = abar.sqrt().to(x.dtype).view(shape)
    s = (1.0 - abar).sqrt().to(x.dtype).view(shape)
    if prediction_type == "v_prediction":
        return a * out + s * x
    if prediction_type == "sample":
        return (x - a * out) / s
    raise ValueError(f"to_eps: prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


class MomentHeads(ModelMixin, ConfigMixin):
    """GMS's eps2 / eps3 heads on a diffusers UNet's last feature map h [N, feature_channels, H, W] and time
    embedding e [N, temb_channels]: ``mode="complex"``: a residual block conditioned on e, then GroupNorm, SiLU and a
    zero-initialised 3x3 convolution to ``out_channels`` (the official GMS heads); ``"simple"``: the last three only.
    Build it for a UNet with :meth:`for_unet`."""

    @register_to_config
    def __init__(self, feature_channels: int, temb_channels: int, out_channels: int, mode: str = "complex",
                 heads: Sequence[str] = MOMENT_HEADS):
        super().__init__()
        if mode not in ("complex", "simple"):
            raise ValueError(f"MomentHeads: argument 'mode' must be 'complex' or 'simple', got {mode!r}")
        heads = tuple(heads)
        if not heads or any(h not in MOMENT_HEADS for h in heads) or len(set(heads)) != len(heads):
            raise ValueError(f"MomentHeads: argument 'heads' must be distinct names among {MOMENT_HEADS}, got {heads}")
        self.head_names = heads
        self.head = nn.ModuleDict()
        for h in heads:
            m = nn.ModuleDict()
            if mode == "complex":
                m["block"] = ResBlock(feature_channels, feature_channels, temb_channels, 0.0)
            m["norm"] = nn.GroupNorm(norm_groups(feature_channels), feature_channels)
            m["out"] = nn.Conv2d(feature_channels, out_channels, 3, padding=1)
            nn.init.zeros_(m["out"].weight)
            nn.init.zeros_(m["out"].bias)
            self.head[h] = m

    @classmethod
    def for_unet(cls, unet, mode: str = "complex", heads: Sequence[str] = MOMENT_HEADS) -> "MomentHeads":
        """Heads sized for ``unet`` (a UNet2DModel: its ``conv_norm_out`` channels, time embedding width and
        ``in_channels``), on its device and dtype."""
        temb = unet.time_embedding.linear_2.out_features
        m = cls(unet.conv_norm_out.num_channels, temb, unet.config.in_channels, mode, heads).to(unet.device)
        # ModelMixin.to(dtype=...) warns even when it changes nothing
        return m if unet.dtype == m.dtype else m.to(dtype=unet.dtype)

    def forward(self, features: Tensor, temb: Tensor) -> Dict[str, Tensor]:
        out = {}
        for name in self.head_names:
            m, h = self.head[name], features
            if "block" in m:
                h = m["block"](h, temb)
            out[name] = m["out"](F.silu(m["norm"](h)))
        return out


class UNetWithMomentHeads(nn.Module):
    """A frozen UNet2DModel plus :class:`MomentHeads`, called like the UNet: ``forward(sample, timestep)`` returns
    ``UNet2DOutput(sample=cat([unet output, eps2, eps3], dim=1))`` from ONE UNet pass (the heads read its last feature
    map and time embedding through forward hooks that live for the call only). ``heads(sample, timestep)`` returns the
    dict {"eps": unet output (its prediction type), "eps2", "eps3"}. ``config`` and ``dtype`` are the UNet's, so
    diffusers' image pipelines (e.g. ``DDPMPipeline(unet=this, scheduler=GMSScheduler(...))``) accept it."""

    def __init__(self, unet, moment_heads: Optional[MomentHeads] = None):
        super().__init__()
        self.unet = unet.requires_grad_(False).eval()
        self.moment_heads = moment_heads if moment_heads is not None else MomentHeads.for_unet(unet)

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self):
        return self.unet.dtype

    @property
    def device(self):
        return self.unet.device

    def train(self, mode: bool = True):
        super().train(mode)
        self.unet.eval()
        return self

    def heads(self, sample: Tensor, timestep, class_labels: Optional[Tensor] = None) -> Dict[str, Tensor]:
        feat: Dict[str, Tensor] = {}
        hooks = [self.unet.conv_norm_out.register_forward_pre_hook(lambda m, inp: feat.__setitem__("h", inp[0])),
                 self.unet.time_embedding.register_forward_hook(lambda m, inp, o: feat.__setitem__("e", o))]
        try:
            with torch.no_grad():
                out = self.unet(sample, timestep, class_labels=class_labels).sample
        finally:
            for hk in hooks:
                hk.remove()
        C = sample.shape[1]
        res = {"eps": out[:, :C]}  # a learned-variance UNet returns 2C channels; the first C are the prediction
        res.update(self.moment_heads(feat["h"].detach(), feat["e"].detach()))
        return res

    def forward(self, sample: Tensor, timestep, class_labels: Optional[Tensor] = None, return_dict: bool = True):
        h = self.heads(sample, timestep, class_labels)
        out = torch.cat([h["eps"]] + [h[n] for n in self.moment_heads.head_names], 1)
        return UNet2DOutput(sample=out) if return_dict else (out,)


class DiffusersEpsModel(nn.Module):
    """The project's epsilon-network interface on a diffusers UNet (or :class:`UNetWithMomentHeads`).

    ``model(x, t)`` with t [N] in schedule units (1..T) returns E[eps | x_t] as the samplers expect;
    ``model(x, t, heads=True)`` returns {"eps", "eps2", "eps3"} (needs :class:`UNetWithMomentHeads`); ``cond`` goes to
    the UNet's ``class_labels``. ``schedule``: a :class:`~.schedules.DiffusersSchedule` or a diffusers scheduler (its
    ``alphas_cumprod`` and ``prediction_type``); ``prediction_type`` overrides the schedule's."""

    def __init__(self, unet, schedule, prediction_type: Optional[str] = None):
        super().__init__()
        if not isinstance(schedule, DiscreteSchedule):
            schedule = schedule_from_diffusers(schedule)
        self.unet = unet
        self.schedule = schedule
        self.prediction_type = prediction_type or getattr(schedule, "prediction_type", "epsilon")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"DiffusersEpsModel: argument 'prediction_type' must be one of {PREDICTION_TYPES}, "
                             f"got {self.prediction_type!r}")
        self.head_names = ("eps",) + (tuple(unet.moment_heads.head_names) if isinstance(unet, UNetWithMomentHeads)
                                      else ())
        self.heads = self.head_names  # the trainer's name for it
        self.data_shape = (unet.config.in_channels, *_size(unet.config.sample_size))

    def unet_timestep(self, t: Tensor) -> Tensor:
        """Schedule time t (1..T) -> the UNet's integer timestep t - 1."""
        ti = torch.as_tensor(t).round().long()
        return ti - 1

    def _abar(self, ti: Tensor) -> Tensor:
        return self.schedule.abar_all[ti.cpu()].to(ti.device)

    def forward(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None, heads: bool = False):
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        ts = self.unet_timestep(t)
        abar = self._abar(ts + 1)
        if heads:
            if not isinstance(self.unet, UNetWithMomentHeads):
                raise ValueError("DiffusersEpsModel: heads=True needs a UNetWithMomentHeads (the UNet plus its GMS "
                                 "moment heads)")
            h = self.unet.heads(x, ts, cond)
            h["eps"] = to_eps(h["eps"], x, abar, self.prediction_type)
            return h
        unet = self.unet.unet if isinstance(self.unet, UNetWithMomentHeads) else self.unet
        out = unet(x, ts, class_labels=cond).sample[:, : x.shape[1]]
        return to_eps(out, x, abar, self.prediction_type)

    def eps_at_index(self, x: Tensor, index: int) -> Tensor:
        """The epsilon prediction at diffusers timestep ``index`` (0..T-1): MGDM's / DPS's ``eps_net(x, t)``."""
        return self(x, torch.full((x.shape[0],), float(index) + 1.0, device=x.device))

    def train(self, mode: bool = True):
        super().train(mode)
        if isinstance(self.unet, UNetWithMomentHeads):
            self.unet.train(mode)
        return self


def _size(s):
    return (s, s) if isinstance(s, int) else tuple(s)


class _HeadsOnlyTrainer(Trainer):
    """The project's trainer with the loss of the trainable heads only (the frozen eps head has no gradient)."""

    def loss(self, x0: Tensor, t: Tensor, eps: Tensor, cond=None) -> Tensor:
        kw = {"cond": cond} if cond is not None else {}
        out = self.net(self.noised(x0, t, eps), t, heads=True, **kw)
        return self.moment_head_loss(out, eps, self.model.head_names)


def train_moment_heads(unet, scheduler, data: Tensor, *, heads: Optional[MomentHeads] = None, mode: str = "complex",
                       steps: int = 1000, batch_size: int = 128, lr: float = 1e-3, ema_decay: float = 0.995,
                       seed: int = 0, labels: Optional[Tensor] = None, device="cpu", progress: bool = False,
                       log_every: int = 0):
    """Train GMS's eps2 / eps3 heads on the frozen ``unet`` (targets eps^2, eps^3 elementwise; the project's trainer:
    AdamW, EMA, gradient clipping, one seeded generator). ``scheduler``: the diffusers scheduler (or
    :class:`~.schedules.DiffusersSchedule`) the UNet was trained with; ``data`` [N, C, H, W] in the UNet's data
    range. Returns (the EMA :class:`MomentHeads` in eval mode, the trainer)."""
    if heads is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            heads = MomentHeads.for_unet(unet, mode)
    model = DiffusersEpsModel(UNetWithMomentHeads(unet, heads), scheduler)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed,
                      log_every=log_every, progress=progress, conditional=labels is not None)
    tr = _HeadsOnlyTrainer(model, model.schedule, data, cfg, labels=labels, device=device)
    tr.train()
    return tr.ema.unet.moment_heads.eval(), tr
