"""The op layer: one module per native op family, named as its schema in csrc/registration.cpp, its kernels in
csrc/cpu/<op>.cpp and csrc/cuda/<op>.cpp, its reference in gmmkernels/reference/<op>.py and its Triton kernel in
gmmkernels/triton/<op>.py. Each module holds the public functions (checks, backend choice, dispatch), and the fake
kernels and autograd formulas of its native ops.

  mixture_stats      mixture_log_prob, mixture_score, mixture_responsibilities, mixture_stats
  gms_fit            gms_fit, gms_step (GMS moment fit and fused sampling step)
  mixture_dispatch   mixture_dispatch, nearest_center (mixDDPM dispatcher)
  lowrank_adapter    lowrank_adapter, hypernet_adapter (SMD adapter)
  mixture_suffstats  mixture_suffstats (EM / VB M-step statistics)
  gibbs_sweep        gibbs_sweep, GibbsPrior (Gibbs sampler sweep)
  mgdm_step          mgdm_vi_step, mgdm_bridge (MGDM Gauss_VI step and bridge draw)
  mixture_em_stats   mixture_em_stats, mixture_em_mstep (one EM / VB pass fused; EM's M-step)

The functions are re-exported by the package root (``gmmkernels.mixture_stats`` ...); this package does not
re-export them, so ``gmmkernels.ops.mixture_stats`` is always the module.
"""
