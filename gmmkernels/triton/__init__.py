"""Triton kernels of gmmkernels (CUDA, or CPU tensors under ``TRITON_INTERPRET=1``), one module per op family,
each registered as ``torch.ops.gmmkernels.<op>_triton`` (a ``torch.library.triton_op``).

Submodules import ``triton`` at import time; the op modules import them lazily, behind
``gmmkernels._backend.HAS_TRITON``:

  gmmkernels.triton.mixture_stats    fused diagonal-covariance mixture statistics (log p, score, responsibilities)
                                     and their backward
  gmmkernels.triton.mixture_em_stats one EM / VB pass: E-step and sufficient statistics in one pass (diag, any K)
  gmmkernels.triton.gms_fit          GMS per-element moment fit (closed form / Adan)
  gmmkernels.triton.mixture_dispatch mixDDPM dispatcher: nearest center + centred forward noising
  gmmkernels.triton.lowrank_adapter  SMD low-rank-plus-diagonal adapter, forward and backward
  gmmkernels.triton._utils           the interpreter flag and fix, the launch wrapper
"""
