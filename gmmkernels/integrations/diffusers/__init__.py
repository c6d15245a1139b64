"""🤗 diffusers front-end (``pip install gmmkernels[diffusers]``): the fused mixture kernels and the project's methods on
diffusers models, schedulers and pipelines. Guide: docs/integrations/diffusers.md.

  schedules   DiffusersSchedule, schedule_from_diffusers, diffusers_scheduler_config, diffusers_scheduler
  unet        DiffusersEpsModel (a UNet2DModel as the project samplers' network), MomentHeads, UNetWithMomentHeads,
              train_moment_heads (GMS's eps2 / eps3 heads on a frozen UNet)
  gms         GMSScheduler: GMS as a diffusers scheduler, one fused gms_step per step
  inverse     MGDMPipeline, DPSPipeline and the observation models (inpainting, denoising, super-resolution, blur,
              any differentiable forward map) for inverse problems
  smd         attach_smd, SMDAdapters: SMD's fused low-rank hypernetwork adapters and identifier on a UNet
  demo        python -m gmmkernels.integrations.diffusers demo: a small UNet2DModel trained on the shipped digits,
              sampled with GMS through the diffusers API
"""
from .. import require

require("diffusers", "diffusers", "diffusers")

from .gms import GMSScheduler, GMSSchedulerOutput  # noqa: E402
from .inverse import (  # noqa: E402
    Denoising,
    DPSPipeline,
    ForwardModel,
    MGDMPipeline,
    SuperResolution,
)
from .schedules import (  # noqa: E402
    DiffusersSchedule,
    diffusers_scheduler,
    diffusers_scheduler_config,
    schedule_from_diffusers,
)
from .smd import SMDAdapters, attach_smd  # noqa: E402
from .unet import DiffusersEpsModel, MomentHeads, UNetWithMomentHeads, train_moment_heads  # noqa: E402

__all__ = [
    "DPSPipeline", "Denoising", "DiffusersEpsModel", "DiffusersSchedule", "ForwardModel", "GMSScheduler",
    "GMSSchedulerOutput", "MGDMPipeline", "MomentHeads", "SMDAdapters", "SuperResolution", "UNetWithMomentHeads",
    "attach_smd", "diffusers_scheduler", "diffusers_scheduler_config", "schedule_from_diffusers",
    "train_moment_heads",
]
