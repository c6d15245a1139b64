"""Schedules both ways: a project :class:`DiscreteSchedule` from any diffusers scheduler, and a diffusers scheduler
config from a project schedule.

Time units: diffusers indexes its training timesteps 0..T-1 and ``alphas_cumprod[i]`` is the noise level of
timestep i; the project's times are 1..T with ``abar_all[t]`` the level of time t and t = 0 the clean data. So
diffusers timestep i is project time i + 1, and both describe the same process: ``abar_all[1:] ==
alphas_cumprod``. The project's uniform K-step grid (t_i = round(i T / K)) is diffusers' ``timestep_spacing=
"trailing"`` grid, shifted by one; ``spacing="diffusers"`` makes a :class:`DiffusersSchedule` follow the grid the
scheduler's own ``set_timesteps(K)`` gives (any ``timestep_spacing`` and ``steps_offset``).
"""
from __future__ import annotations

import copy
import inspect
from typing import Optional

import torch
from torch import Tensor

from ...diffusion.schedules import DiscreteSchedule, Schedule

__all__ = ["DiffusersSchedule", "PREDICTION_TYPES", "diffusers_scheduler", "diffusers_scheduler_config",
           "schedule_from_diffusers"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class DiffusersSchedule(DiscreteSchedule):
    """A :class:`DiscreteSchedule` read from a diffusers scheduler: the same ``alphas_cumprod`` (in float64), its
    ``prediction_type``, and, with ``spacing="diffusers"`` in :meth:`grid`, the scheduler's own time grid."""

    SPACINGS = ("uniform", "quadratic", "diffusers")

    def __init__(self, alphas_cumprod: Tensor, prediction_type: str = "epsilon", scheduler=None):
        acp = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
        super().__init__(1.0 - acp / prev, "custom")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"DiffusersSchedule: argument 'prediction_type' must be one of {PREDICTION_TYPES}, "
                             f"got {prediction_type!r}")
        self.prediction_type = prediction_type
        self.scheduler = scheduler

    def grid(self, K: Optional[int] = None, spacing: str = "uniform") -> Tensor:
        """K + 1 descending times ending at 0. ``spacing="diffusers"``: the scheduler's ``set_timesteps(K)``
        timesteps + 1, then 0 (checked to be the chain the scheduler steps through)."""
        if spacing != "diffusers":
            return super().grid(K, spacing)
        if self.scheduler is None:
            raise ValueError("grid: spacing='diffusers' needs the schedule to be built from a scheduler")
        K = self.T if K is None else K
        sch = copy.deepcopy(self.scheduler)
        sch.set_timesteps(K)
        ts = [int(t) for t in sch.timesteps]
        if hasattr(sch, "previous_timestep"):
            prev = [int(sch.previous_timestep(t)) for t in sch.timesteps]
        else:  # DDIM-style schedulers step by a fixed ratio
            ratio = sch.config.num_train_timesteps // K
            prev = [t - ratio for t in ts]
        final = getattr(sch, "final_alpha_cumprod", None)
        if final is not None and float(final) != 1.0:
            raise ValueError("grid: the scheduler's last step goes to alphas_cumprod[0], not to the clean data "
                             "(set_alpha_to_one=False); the project's grids end at t = 0")
        if prev[:-1] != ts[1:] or prev[-1] >= 0:
            raise ValueError(f"grid: the scheduler's steps {list(zip(ts, prev))} do not form one chain ending at the "
                             "data; use spacing='uniform' (diffusers' 'trailing' spacing)")
        return torch.tensor([t + 1 for t in ts] + [0], dtype=torch.float64)


def schedule_from_diffusers(scheduler) -> DiffusersSchedule:
    """The project schedule of a diffusers scheduler (or of a scheduler config dict, read by ``DDPMScheduler``):
    its ``alphas_cumprod`` and ``prediction_type``."""
    if isinstance(scheduler, dict):
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_config(scheduler)
    acp = getattr(scheduler, "alphas_cumprod", None)
    if acp is None:
        raise TypeError(f"schedule_from_diffusers: argument 'scheduler' ({type(scheduler).__name__}) has no "
                        "alphas_cumprod; only discrete variance-preserving schedulers map to a DiscreteSchedule")
    return DiffusersSchedule(acp, scheduler.config.get("prediction_type", "epsilon"), scheduler)


def diffusers_scheduler_config(schedule: Schedule, *, prediction_type: str = "epsilon",
                               clip_sample: Optional[float] = None) -> dict:
    """A diffusers scheduler config (for ``DDPMScheduler.from_config``, ``DDIMScheduler.from_config``,
    :class:`GMSScheduler`'s ...) describing ``schedule``: the named diffusers beta schedule where it is the same
    ("linear"; "squaredcos_cap_v2" for the cosine schedule with s = 0.008, max_beta = 0.999), else ``trained_betas``
    (the sigmoid schedule too: only DDPMScheduler knows diffusers' "sigmoid"); ``timestep_spacing="trailing"``,
    under which ``set_timesteps(K)`` is the project's uniform K-step grid; ``clip_sample`` as the samplers'
    ``clip_x0`` (None: no clipping)."""
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"diffusers_scheduler_config: argument 'schedule' must be a DiscreteSchedule (diffusers' "
                        f"schedulers are discrete), got {type(schedule).__name__}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"diffusers_scheduler_config: argument 'prediction_type' must be one of {PREDICTION_TYPES}, "
                         f"got {prediction_type!r}")
    p = schedule.params
    cfg = {"num_train_timesteps": schedule.T, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
           "trained_betas": None}
    if schedule.name == "linear":
        cfg.update(beta_start=p["beta_start"], beta_end=p["beta_end"])
    elif schedule.name == "cosine" and p.get("s") == 0.008 and p.get("max_beta") == 0.999:
        cfg["beta_schedule"] = "squaredcos_cap_v2"
    else:
        cfg["trained_betas"] = schedule.betas.tolist()
    cfg.update(prediction_type=prediction_type, clip_sample=clip_sample is not None,
               clip_sample_range=float(clip_sample) if clip_sample is not None else 1.0,
               timestep_spacing="trailing", steps_offset=0, set_alpha_to_one=True)
    return cfg


def diffusers_scheduler(schedule: Schedule, cls=None, **kw):
    """A diffusers scheduler (``cls``, default ``DDPMScheduler``) built from :func:`diffusers_scheduler_config`;
    keyword arguments go to the config function (prediction_type, clip_sample)."""
    if cls is None:
        from diffusers import DDPMScheduler as cls
    cfg = diffusers_scheduler_config(schedule, **kw)
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls.from_config({k: v for k, v in cfg.items() if k in accepted})
