"""MGDM and DPS as diffusers pipelines for inverse problems on any UNet2DModel (docs/methods.md (MGDM)).

``MGDMPipeline(unet, scheduler)(observation, batch_size=...)`` draws approximate posterior samples x0 ~ p(x0 | y)
with :func:`gmmkernels.diffusion.methods.mgdm.mgdm` (Gibbs sweeps with the fused Gaussian-VI step and bridge draws),
``DPSPipeline`` with :func:`~gmmkernels.diffusion.methods.mgdm.dps`; the UNet runs at diffusers timestep indices, the
convention of both samplers, with the scheduler's ``alphas_cumprod`` and ``prediction_type``.

Observations (y = A(x0) + sigma_y noise, log-potential -|y - A(x0)|^2 / (2 sigma_y^2)): the method module's
``Inpainting``, ``LinearObservation``, ``Blur``, ``PhaseObservation``, and here :class:`Denoising` (A = identity),
:class:`SuperResolution` (A = average pooling by ``factor``) and :class:`ForwardModel` (any differentiable
callable A). ``observation.observe(x0, generator)`` makes a measurement; set ``observation.y`` before sampling.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, ImagePipelineOutput
from torch import Tensor

from ...diffusion.methods.mgdm import CallCounter, MGDMConfig, Observation, dps, mgdm
from .unet import DiffusersEpsModel

__all__ = ["DPSPipeline", "Denoising", "ForwardModel", "MGDMPipeline", "SuperResolution"]


@dataclass
class Denoising(Observation):
    """y = x0 + sigma_y noise."""

    y: Optional[Tensor] = None
    sigma_y: float = 0.05

    def forward(self, x: Tensor) -> Tensor:
        return x


@dataclass
class SuperResolution(Observation):
    """y = average pooling of x0 by ``factor`` (a low-resolution image) + sigma_y noise."""

    factor: int = 2
    y: Optional[Tensor] = None
    sigma_y: float = 0.05

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.factor)


@dataclass
class ForwardModel(Observation):
    """y = fn(x0) + sigma_y noise for any differentiable ``fn`` mapping [B, C, H, W] to [B, ...]."""

    fn: Callable[[Tensor], Tensor] = None
    y: Optional[Tensor] = None
    sigma_y: float = 0.05

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def _images(x: Tensor, output_type: str):
    """diffusers' image outputs: [-1, 1] -> [0, 1]; "pt" tensor, "np" NHWC array, "pil" images, "latent" raw."""
    if output_type == "latent":
        return x
    img = (x / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return img
    img = img.cpu().permute(0, 2, 3, 1).numpy()
    return DiffusionPipeline.numpy_to_pil(img) if output_type == "pil" else img


class _InversePipeline(DiffusionPipeline):
    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def _setup(self, observation: Observation, batch_size: int):
        if not isinstance(observation, Observation):
            raise TypeError(f"{type(self).__name__}: argument 'observation' must be an Observation (Inpainting, "
                            f"Denoising, SuperResolution, ForwardModel, ...), got {type(observation).__name__}")
        if observation.y is None:
            raise ValueError(f"{type(self).__name__}: argument 'observation' has no measurement y (set observation.y, "
                             "e.g. observation.y = observation.observe(x0))")
        model = DiffusersEpsModel(self.unet, self.scheduler).eval()
        C, H, W = model.data_shape
        return model, (batch_size, C, H, W), self.scheduler.alphas_cumprod.double()


class MGDMPipeline(_InversePipeline):
    """MGDM posterior sampling on a diffusers UNet: ``pipe(observation, batch_size, config=MGDMConfig(...), seed=0,
    fused=True, backend="auto", output_type="pt")`` -> ``ImagePipelineOutput(images=...)``. ``config`` holds the
    sampler's settings (K outer steps, R Gibbs sweeps, M DDIM steps, the VI schedule); ``fused=True`` runs the fused
    ``mgdm_vi_step`` / ``mgdm_bridge`` kernels. ``counter`` (a CallCounter) counts the network evaluations."""

    @torch.no_grad()
    def __call__(self, observation: Observation, batch_size: int = 1, *, config: Optional[MGDMConfig] = None,
                 seed: int = 0, fused: bool = True, backend: str = "auto", counter: Optional[CallCounter] = None,
                 output_type: str = "pt", return_dict: bool = True):
        model, shape, acp = self._setup(observation, batch_size)
        x0 = mgdm(model.eps_at_index, acp, observation.log_pot, shape, config, fused=fused, seed=seed,
                  device=self.unet.device, dtype=self.unet.dtype, counter=counter, backend=backend)
        images = _images(x0, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)


class DPSPipeline(_InversePipeline):
    """Diffusion posterior sampling (Chung et al. 2023) on a diffusers UNet: ``pipe(observation, batch_size, steps=
    1000, zeta=1.0, seed=0, output_type="pt")``."""

    @torch.no_grad()
    def __call__(self, observation: Observation, batch_size: int = 1, *, steps: int = 1000, zeta: float = 1.0,
                 seed: int = 0, counter: Optional[CallCounter] = None, output_type: str = "pt",
                 return_dict: bool = True):
        model, shape, acp = self._setup(observation, batch_size)
        x0 = dps(model.eps_at_index, acp, observation, shape, steps=min(steps, acp.numel()), zeta=zeta, seed=seed,
                 device=self.unet.device, dtype=self.unet.dtype, counter=counter)
        images = _images(x0, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
