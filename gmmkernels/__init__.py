"""gmmkernels: fused Gaussian-mixture kernels (C++ CPU, CUDA, Triton) for mixture diffusion methods.

Public API (one module per op family under gmmkernels/ops/, algorithms under gmmkernels/fit/):
  mixture_log_prob, mixture_score, mixture_responsibilities, mixture_stats   fused mixture density ops
  GaussianMixture                                      nn.Module + exact diffusion oracle; GaussianMixture.fit (EM)
  gms_fit, gms_step                                    GMS moment matching and the fused GMS sampler step
  mixture_dispatch, nearest_center                     mixDDPM dispatcher
  lowrank_adapter, hypernet_adapter                    SMD low-rank hypernetwork adapter
  mixture_suffstats, gibbs_sweep                       M-step statistics, Gibbs sweep
  mixture_em_stats, mixture_em_mstep                   one EM / VB pass: E-step and sufficient statistics fused; EM's M-step
  mgdm_vi_step, mgdm_bridge                            MGDM Gauss_VI step and bridge draw
  fit_em, fit_vb, gibbs, kmeans, kmeans_plusplus       batched fitting built on the ops
  fit_em_chunked, fit_vb_chunked                       EM / VB on chunked (DataLoader) or distributed data
  available_backends, set_validation, build_info
Algorithms of the diffusion methods (training, sampling, ``reproduce`` experiments) live in ``gmmkernels.diffusion``.
Architecture: docs/architecture.md.
"""
__version__ = "0.1.0"

from . import _backend  # noqa: F401  (loads the native extension when present)
from ._backend import build_info
from ._validate import set_validation
from .fit import FitResult, GibbsResult, KMeans, fit_em, fit_vb, gibbs, kmeans, kmeans_plusplus
from .fit import fit_em_chunked, fit_vb_chunked
from .mixture import GaussianMixture
from .ops.gibbs_sweep import GibbsPrior, gibbs_sweep
from .ops.gms_fit import GMSCoeffs, GMSFit, GMSStep, available_gms_backends, gms_fit, gms_step
from .ops.lowrank_adapter import available_adapter_backends, hypernet_adapter, lowrank_adapter
from .ops.mgdm_step import mgdm_bridge, mgdm_vi_step
from .ops.mixture_dispatch import Dispatch, mixture_dispatch, nearest_center
from .ops.mixture_stats import (
    MixtureStats,
    available_backends,
    mixture_log_prob,
    mixture_responsibilities,
    mixture_score,
    mixture_stats,
)
from .ops.mixture_suffstats import mixture_suffstats
from .ops.mixture_em_stats import EMParams, EMStats, mixture_em_mstep, mixture_em_stats

__all__ = [
    "Dispatch",
    "EMParams",
    "EMStats",
    "FitResult",
    "GMSCoeffs",
    "GMSFit",
    "GMSStep",
    "GaussianMixture",
    "GibbsPrior",
    "GibbsResult",
    "KMeans",
    "MixtureStats",
    "available_adapter_backends",
    "available_backends",
    "available_gms_backends",
    "build_info",
    "fit_em",
    "fit_em_chunked",
    "fit_vb",
    "fit_vb_chunked",
    "gibbs",
    "gibbs_sweep",
    "gms_fit",
    "gms_step",
    "hypernet_adapter",
    "kmeans",
    "kmeans_plusplus",
    "lowrank_adapter",
    "mgdm_bridge",
    "mgdm_vi_step",
    "mixture_dispatch",
    "mixture_em_mstep",
    "mixture_em_stats",
    "mixture_log_prob",
    "mixture_responsibilities",
    "mixture_score",
    "mixture_stats",
    "mixture_suffstats",
    "nearest_center",
    "set_validation",
]
