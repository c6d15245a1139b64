"""Gaussian-mixture diffusion core: schedules, samplers, the exact mixture oracle, networks, trainer,
datasets and metrics that the mixture diffusion methods (GMS, MGDM, mixDDPM/mixSGM, NGMG, SMD) build on.

  schedules   DiscreteSchedule (linear / cosine / sigmoid), VPSDE, make_schedule; posterior (A, B, lambda^2),
              bridge (DDIM(eta) bridge), ddim coefficients -- all float64
  samplers    sample(model, schedule, shape, method, K, generator=...) with method in SAMPLERS:
              ddpm, ddpm_large, ddim, sn_ddpm, analytic_dpm, euler_maruyama
  oracle      MixtureOracle: exact eps / score / E[x0|x_t] / E[x0^n|x_t] and eps^n heads of a GaussianMixture
  models      MLPEps, UNetEps, default_model, build_model
  trainer     TrainConfig, Trainer (AdamW/Adam, EMA, clipping, exact-resume checkpoints, DDP), load_checkpoint
  data        get_dataset, DATASETS (gmm1d, gmm2d, grid7x7, gmm25, moons, digits, digits16), load_digits
  metrics     mixture_nll, sliced_wasserstein, mmd, mode_coverage, frechet_distance, digits_fd, psnr, ssim
  plotting    PNG output without matplotlib: save_png, image_grid, data_vs_samples
  commands    the `gmmkernels train` / `gmmkernels sample` subcommands and the demo section

The methods themselves are in :mod:`.methods` (one module each: gms, smd, mixddpm, ngmg, mgdm; the algorithms)
and their reproductions and demo sections in :mod:`.experiments` (one module each, and the registry
``EXPERIMENTS`` that ``gmmkernels reproduce`` and ``gmmkernels demo`` read). Imports go one way:
experiments -> methods -> this core.
"""
from .data import DATASETS, Dataset, get_dataset, load_digits
from .metrics import digits_fd, frechet_distance, mixture_nll, mmd, mode_coverage, sliced_wasserstein
from .models import MLPEps, UNetEps, build_model, default_model
from .oracle import MixtureOracle
from .samplers import SAMPLERS, estimate_gamma, sample
from .schedules import VPSDE, DiscreteSchedule, Schedule, make_schedule
from .trainer import TrainConfig, Trainer, init_distributed, load_checkpoint

__all__ = [
    "DATASETS", "Dataset", "DiscreteSchedule", "MLPEps", "MixtureOracle", "SAMPLERS", "Schedule", "TrainConfig",
    "Trainer", "UNetEps", "VPSDE", "build_model", "default_model", "digits_fd", "estimate_gamma", "frechet_distance",
    "get_dataset", "init_distributed", "load_checkpoint", "load_digits", "make_schedule", "mixture_nll", "mmd",
    "mode_coverage", "sample", "sliced_wasserstein",
]
