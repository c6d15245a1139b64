"""Triton kernels of gmmkernels (CUDA, or CPU tensors under ``TRITON_INTERPRET=1``).

Submodules import ``triton`` at import time; import them lazily, behind ``gmmkernels._backend.HAS_TRITON``:

  gmmkernels.triton.mixture_stats   fused diagonal-covariance mixture statistics (log p, score, responsibilities)
                                    and their backward, registered as ``torch.ops.gmmkernels.mixture_stats_triton``
  gmmkernels.triton.gms_fit          GMS per-element moment fit (closed form / Adan) and the fused GMS step
  gmmkernels.triton.mixture_dispatch mixDDPM dispatcher: nearest center + centred forward noising
  gmmkernels.triton.lowrank_adapter  SMD low-rank-plus-diagonal adapter, forward and backward
"""
