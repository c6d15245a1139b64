"""GMS (Gaussian Mixture Solvers, docs/methods.md (GMS)) as a diffusers scheduler: every reverse step is ONE call
of the fused :func:`gmmkernels.gms_step` (moments from the three heads, moment-matching fit, component choice, draw).

``GMSScheduler`` is a ``SchedulerMixin`` / ``ConfigMixin``: ``set_timesteps``, ``step`` returning
``GMSSchedulerOutput(prev_sample, pred_original_sample)``, ``add_noise``, ``save_pretrained`` / ``from_config``.
The model output it steps on holds the three heads: a tensor with 3C channels (the first head in the scheduler's
``prediction_type``, then eps2 = E[eps^2 | x_t] and eps3 = E[eps^3 | x_t], as :class:`~.unet.UNetWithMomentHeads`
returns), or a dict / tuple of the three. So a plain diffusers loop, or ``DDPMPipeline(unet=UNetWithMomentHeads(
unet, heads), scheduler=GMSScheduler(...))``, samples with GMS.

Randomness: at the first step after ``set_timesteps`` the scheduler draws one 64-bit seed from the step's
``generator`` (torch's default generator without one) and uses the step index as the offset of the kernel's
counter-based stream, exactly as :func:`gmmkernels.diffusion.methods.gms.gms_sample`, so a pipeline seeded like the
project's sampler draws the same samples. The defaults are the official sampler's (Adan fit, one component draw per
image, weight 1/3); the last step (to the data) is Gaussian with its variance capped by ``last_var_max``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from diffusers import ConfigMixin, DDPMScheduler, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import Tensor

from ... import GMSCoeffs, gms_step
from .schedules import PREDICTION_TYPES, DiffusersSchedule
from .unet import to_eps

__all__ = ["GMSScheduler", "GMSSchedulerOutput"]


@dataclass
class GMSSchedulerOutput(BaseOutput):
    """prev_sample: x_s [N, C, H, W]; pred_original_sample: the clamped E[x0 | x_t] the step's moments use."""

    prev_sample: Tensor
    pred_original_sample: Optional[Tensor] = None


class GMSScheduler(SchedulerMixin, ConfigMixin):
    """Gaussian Mixture Solver steps on the fused kernel.

    Schedule arguments as ``DDPMScheduler``'s (num_train_timesteps, beta_start, beta_end, beta_schedule,
    trained_betas, prediction_type, timestep_spacing, steps_offset, rescale_betas_zero_snr; the default spacing
    "trailing" is the project's uniform grid). GMS arguments as :func:`gms_sample`'s: ``fit`` ("adan", the official
    solver, or "closed"), ``per_image``, ``weight``, ``iters``, ``lr``, ``var_floor``, ``last_var_max``, and
    ``backend`` of :func:`gmmkernels.gms_step`.
    """

    order = 1
    _compatibles: list = []

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas=None, prediction_type: str = "epsilon",
                 timestep_spacing: str = "trailing", steps_offset: int = 0, rescale_betas_zero_snr: bool = False,
                 fit: str = "adan", per_image: bool = True, weight: float = 1.0 / 3.0, iters: int = 70,
                 lr: float = 0.06, var_floor: float = 0.1, last_var_max: Optional[float] = None,
                 backend: str = "auto"):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"GMSScheduler: argument 'prediction_type' must be one of {PREDICTION_TYPES}, "
                             f"got {prediction_type!r}")
        if fit not in ("adan", "closed"):
            raise ValueError(f"GMSScheduler: argument 'fit' must be 'adan' or 'closed', got {fit!r}")
        # the betas and the time grid exactly as DDPMScheduler computes them from the same arguments
        self._grid = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                                   beta_schedule=beta_schedule, trained_betas=trained_betas,
                                   prediction_type=prediction_type, timestep_spacing=timestep_spacing,
                                   steps_offset=steps_offset, rescale_betas_zero_snr=rescale_betas_zero_snr)
        self.betas = self._grid.betas
        self.alphas_cumprod = self._grid.alphas_cumprod
        self.schedule = DiffusersSchedule(self.alphas_cumprod, prediction_type)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = self._grid.timesteps
        self._seed: Optional[int] = None
        self._step_index = 0

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int, device: Union[str, torch.device, None] = None):
        """The K-step grid (diffusers' ``timestep_spacing``); resets the step counter and the kernel seed."""
        self._grid.set_timesteps(num_inference_steps)
        self.num_inference_steps = num_inference_steps
        self.timesteps = self._grid.timesteps.to(device) if device is not None else self._grid.timesteps
        self._seed, self._step_index = None, 0

    def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
        return sample

    def previous_timestep(self, timestep) -> int:
        """The timestep the step from ``timestep`` lands on (-1: the clean data)."""
        ts = [int(t) for t in self.timesteps]
        i = ts.index(int(timestep))
        return ts[i + 1] if i + 1 < len(ts) else -1

    def _split(self, model_output, sample: Tensor):
        if isinstance(model_output, dict):
            return model_output["eps"], model_output["eps2"], model_output["eps3"]
        if isinstance(model_output, (tuple, list)):
            return tuple(model_output)
        C = sample.shape[1]
        if model_output.shape[1] != 3 * C:
            raise ValueError(f"GMSScheduler.step: argument 'model_output' must hold the three heads (eps, eps2, eps3) "
                             f"on 3 x {C} channels, got {model_output.shape[1]} channels (use UNetWithMomentHeads)")
        return model_output[:, :C], model_output[:, C:2 * C], model_output[:, 2 * C:]

    def step(self, model_output, timestep, sample: Tensor, generator: Optional[torch.Generator] = None,
             return_dict: bool = True):
        """One GMS transition from ``timestep`` to the next timestep of the grid (the data after the last)."""
        if self.num_inference_steps is None:
            raise ValueError("GMSScheduler.step: call set_timesteps first")
        e1, e2, e3 = self._split(model_output, sample)
        t, s = int(timestep) + 1, self.previous_timestep(timestep) + 1  # project times: data at 0
        sch = self.schedule
        e1 = to_eps(e1, sample, sch.abar_all[t].expand(sample.shape[0]), self.config.prediction_type)
        if self._seed is None:
            gdev = generator.device if generator is not None else "cpu"
            self._seed = int(torch.randint(0, 1 << 62, (1,), generator=generator, device=gdev))
        a_t, sig_t = (float(v) for v in sch.alpha_sigma(t))
        c = GMSCoeffs(a_t, sig_t, *(float(v) for v in sch.posterior(t, s)))
        cfg = self.config
        if s == 0:
            x = gms_step(sample, e1, e2, e3, c, method="gaussian", per_image=cfg.per_image, seed=self._seed,
                         offset=self._step_index, var_clip=cfg.last_var_max, backend=cfg.backend)
        else:
            x = gms_step(sample, e1, e2, e3, c, method=cfg.fit, weight=cfg.weight, per_image=cfg.per_image,
                         seed=self._seed, offset=self._step_index, iters=cfg.iters, lr=cfg.lr,
                         var_floor=cfg.var_floor, backend=cfg.backend)
        self._step_index += 1
        x0 = ((sample - sig_t * e1) / a_t).clamp(-1.0, 1.0)
        return GMSSchedulerOutput(prev_sample=x, pred_original_sample=x0) if return_dict else (x, x0)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise at diffusers timesteps (training loops)."""
        acp = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)[timesteps]
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        return acp.sqrt().view(shape) * original_samples + (1 - acp).sqrt().view(shape) * noise
