"""SMD (Soft Mixture Denoising, docs/methods.md (SMD)) on a diffusers UNet: the fused low-rank hypernetwork adapters
after ``conv_in`` and before ``conv_out`` and the latent identifier g(x_t, eta, t), trained and sampled with
:mod:`gmmkernels.diffusion.methods.smd` (``smd.train``, ``smd.sample``).

``model, adapters = attach_smd(unet, scheduler)`` returns an :class:`~gmmkernels.diffusion.methods.smd.SMDModel`
around the UNet (the UNet itself is unchanged: the adapters act through forward hooks while the SMD model runs) and
the :class:`SMDAdapters` holding the identifier and the two adapters, a diffusers ``ModelMixin`` with
``save_pretrained`` / ``from_pretrained``; ``attach_smd(unet, scheduler, adapters=SMDAdapters.from_pretrained(d))``
puts saved adapters back on a UNet. The objective follows the scheduler's ``prediction_type`` (epsilon or v).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from ...diffusion.methods.smd import HyperAdapter, IdentifierUNet, SMDModel
from ...diffusion.schedules import DiscreteSchedule
from .schedules import schedule_from_diffusers

__all__ = ["SMDAdapters", "attach_smd"]

_OBJECTIVES = {"epsilon": "eps", "v_prediction": "v"}


class SMDAdapters(ModelMixin, ConfigMixin):
    """The trainable parts SMD adds to a UNet: the identifier (a small UNet of cat([x_t, eta]) and t with
    ``latent_dim`` output channels) and the two hypernetwork adapters (``conv_in``'s output channels, ``conv_out``'s
    input channels; ``adapter_layers`` low-rank-plus-diagonal layers each, run by the fused ``hypernet_adapter``)."""

    @register_to_config
    def __init__(self, sample_shape: Sequence[int], in_features: int, out_features: int, latent_dim: int = 32,
                 adapter_layers: int = 2, num_train_timesteps: int = 1000, zero_init: bool = True,
                 backend: str = "auto"):
        super().__init__()
        self.identifier = IdentifierUNet(tuple(sample_shape), latent_dim, t_max=float(num_train_timesteps))
        self.adapter_in = HyperAdapter(in_features, latent_dim, adapter_layers, zero_init, backend)
        self.adapter_out = HyperAdapter(out_features, latent_dim, adapter_layers, zero_init, backend)


class _UNetCore(nn.Module):
    """The UNet as SMDModel's core network: ``forward(x, t)`` with project times (1..T) calls ``unet(x, t - 1)`` and
    returns its raw prediction; ``inp`` / ``out["eps"]`` are the UNet's ``conv_in`` / ``conv_out`` (where SMDModel puts
    its adapters)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.data_shape = (unet.config.in_channels, *((unet.config.sample_size,) * 2
                                                      if isinstance(unet.config.sample_size, int)
                                                      else unet.config.sample_size))

    @property
    def inp(self) -> nn.Module:
        return self.unet.conv_in

    @property
    def out(self) -> dict:
        return {"eps": self.unet.conv_out}

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ts = t.expand(x.shape[0]) if t.dim() == 0 else t
        return self.unet(x, ts.round().long() - 1).sample[:, : x.shape[1]]


def attach_smd(unet, scheduler, *, adapters: Optional[SMDAdapters] = None, latent_dim: int = 32,
               adapter_layers: int = 2, freeze_unet: bool = False, zero_init: bool = True,
               backend: str = "auto") -> Tuple[SMDModel, SMDAdapters]:
    """SMD around ``unet`` (a UNet2DModel trained with ``scheduler``, a diffusers scheduler or DiffusersSchedule).

    New adapters (``latent_dim``, ``adapter_layers``; ``zero_init`` makes the adapters start as the identity, so the
    SMD model starts as the UNet) unless ``adapters`` are given. ``freeze_unet`` leaves only the SMD parts trainable.
    Returns (SMDModel, SMDAdapters); train with ``gmmkernels.diffusion.methods.smd.train(model, data, ...)``, sample
    with ``smd.sample(model, n, method="ddim" | "ddpm", K=...)``."""
    schedule = scheduler if isinstance(scheduler, DiscreteSchedule) else schedule_from_diffusers(scheduler)
    ptype = getattr(schedule, "prediction_type", "epsilon")
    if ptype not in _OBJECTIVES:
        raise ValueError(f"attach_smd: argument 'scheduler': SMD trains epsilon or v prediction, the scheduler's "
                         f"prediction_type is {ptype!r}")
    core = _UNetCore(unet)
    if adapters is None:
        adapters = SMDAdapters(core.data_shape, unet.conv_in.out_channels, unet.conv_out.in_channels, latent_dim,
                               adapter_layers, schedule.T, zero_init, backend).to(unet.device, unet.dtype)
    cfg = adapters.config
    if (cfg.in_features, cfg.out_features) != (unet.conv_in.out_channels, unet.conv_out.in_channels):
        raise ValueError(f"attach_smd: argument 'adapters' was built for {cfg.in_features} / {cfg.out_features} "
                         f"channels, the UNet has {unet.conv_in.out_channels} / {unet.conv_out.in_channels}")
    unet.requires_grad_(not freeze_unet)
    model = SMDModel(core, schedule, latent_dim=cfg.latent_dim, adapter_layers=cfg.adapter_layers,
                     objective=_OBJECTIVES[ptype], identifier=adapters.identifier, backend=cfg.backend)
    model.adapter_in, model.adapter_out = adapters.adapter_in, adapters.adapter_out
    return model, adapters
