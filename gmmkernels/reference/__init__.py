"""Pure-PyTorch references: the specification and the test oracle of every fused op, one module per op family
(the same names as gmmkernels/ops/, csrc/cpu/, csrc/cuda/ and gmmkernels/triton/).

They materialise intermediates, run in any dtype (float64 in the tests) and are differentiable through autograd.
Nothing here is fast; everything here is meant to be obviously right. The public ops run them as their
``backend="reference"``; production code never calls their private helpers.
"""
from .gibbs_sweep import gibbs_sweep_ref
from .gms_fit import adan_fit_ref, closed_fit_ref, fit_ref, gms_step_ref, step_moments_ref
from .kmeans import kmeans_ref
from .lowrank_adapter import (hypernet_adapter_ref, lowrank_adapter_backward_ref, lowrank_adapter_factored,
                              lowrank_adapter_ref)
from .mgdm_step import mgdm_bridge_ref, mgdm_vi_step_ref
from .mixture_em_stats import (EMParams, EMStats, em_covariances, em_moments, mixture_em_mstep_ref,
                               mixture_em_stats_kernel_ref, mixture_em_stats_ref)
from .mixture_dispatch import Dispatch, dispatch_vjp, mixture_dispatch_ref, nearest_center_ref
from .mixture_stats import (MixtureStats, mixture_log_prob_ref, mixture_stats_backward_ref, mixture_stats_kernel_ref,
                            mixture_stats_ref)
from .mixture_suffstats import em_step_ref, mixture_suffstats_ref
from .rng import philox_normal_ref, philox_uniform_ref

__all__ = [
    "Dispatch", "EMParams", "EMStats", "MixtureStats", "adan_fit_ref", "closed_fit_ref", "dispatch_vjp",
    "em_covariances", "em_moments", "em_step_ref", "fit_ref", "gibbs_sweep_ref", "gms_step_ref",
    "hypernet_adapter_ref", "kmeans_ref", "lowrank_adapter_backward_ref", "lowrank_adapter_factored",
    "lowrank_adapter_ref", "mgdm_bridge_ref", "mgdm_vi_step_ref", "mixture_dispatch_ref", "mixture_em_mstep_ref",
    "mixture_em_stats_kernel_ref", "mixture_em_stats_ref", "mixture_log_prob_ref", "mixture_stats_backward_ref",
    "mixture_stats_kernel_ref", "mixture_stats_ref", "mixture_suffstats_ref", "nearest_center_ref",
    "philox_normal_ref", "philox_uniform_ref", "step_moments_ref",
]
