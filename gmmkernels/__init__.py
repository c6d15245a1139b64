"""gmmkernels: fused Gaussian-mixture kernels (C++ CPU, CUDA, Triton) for mixture diffusion methods.

Public API:
  mixture_log_prob, mixture_score, mixture_responsibilities, mixture_stats   fused mixture density ops (ops.py)
  GaussianMixture                                      nn.Module + exact diffusion oracle; GaussianMixture.fit (EM)
  fit_em, fit_vb, gibbs, mixture_suffstats, kmeans_plusplus                  batched mixture fitting (fit.py)
  gms_fit, gms_step                                    GMS moment matching and the fused GMS sampler step (gms.py)
  mixture_dispatch, nearest_center, kmeans             mixDDPM dispatcher and batched k-means (mixddpm_ops.py)
  lowrank_adapter, hypernet_adapter                    SMD low-rank hypernetwork adapter (smd_ops.py)
  available_backends, set_validation, build_info
Algorithms (training, sampling, ``reproduce`` experiments) live in ``gmmkernels.diffusion``.
"""
__version__ = "0.1.0"

from . import _backend  # noqa: F401  (loads the native extension when present)
from . import _registrations  # noqa: F401  (fake kernels + autograd of the native ops)
from . import _registrations_fit  # noqa: F401
from . import _registrations_gms  # noqa: F401
from . import _registrations_mixddpm  # noqa: F401
from . import _registrations_smd  # noqa: F401
from ._backend import build_info
from .fit import FitResult, GibbsPrior, fit_em, fit_vb, gibbs, kmeans_plusplus, mixture_suffstats
from .gms import GMSCoeffs, GMSFit, GMSStep, available_gms_backends, gms_fit, gms_step
from .mixddpm_ops import kmeans, mixture_dispatch, nearest_center
from .mixture import GaussianMixture
from .smd_ops import available_adapter_backends, hypernet_adapter, lowrank_adapter
from .ops import (
    MixtureStats,
    available_backends,
    mixture_log_prob,
    mixture_responsibilities,
    mixture_score,
    mixture_stats,
    set_validation,
)

__all__ = [
    "FitResult",
    "GMSCoeffs",
    "GMSFit",
    "GMSStep",
    "GaussianMixture",
    "GibbsPrior",
    "MixtureStats",
    "available_adapter_backends",
    "available_backends",
    "available_gms_backends",
    "build_info",
    "fit_em",
    "fit_vb",
    "gibbs",
    "gms_fit",
    "gms_step",
    "hypernet_adapter",
    "kmeans",
    "kmeans_plusplus",
    "lowrank_adapter",
    "mixture_dispatch",
    "mixture_suffstats",
    "nearest_center",
    "mixture_log_prob",
    "mixture_responsibilities",
    "mixture_score",
    "mixture_stats",
    "set_validation",
]
