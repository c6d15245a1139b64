"""Pure-PyTorch reference of ``mixture_em_stats``: one EM / VB iteration's E-step and sufficient statistics, by
direct (materialising) evaluation. The specification and test oracle of ``torch.ops.gmmkernels.mixture_em_stats``
and of the public :func:`gmmkernels.mixture_em_stats` (docs/kernels.md (mixture_em_stats)).

  mixture_em_stats_ref         public arguments (logits, means, scale, cov_type), leading dimensions broadcast
  mixture_em_stats_kernel_ref  kernel arguments (means, prec = W, logc, full) of the native op
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .mixture_stats import _component_terms
from .mixture_suffstats import mixture_suffstats_ref


class EMStats(NamedTuple):
    """What one pass of EM / VB needs from the data, per mixture. The public op returns it too, with ``None`` in
    ``responsibilities`` unless they were asked for."""

    sum_log_prob: Tensor  # [...]           sum_n log p(x_n)
    sum_r_log_r: Tensor  # [...]            sum_n sum_k r_nk log r_nk (minus the responsibility entropy)
    nk: Tensor  # [..., K]                  sum_n r_nk
    sx: Tensor  # [..., K, D]               sum_n r_nk x_n
    sxx: Tensor  # [..., K, D] / [..., K, D, D]   sum_n r_nk x_n^2 (diag, spherical) / sum_n r_nk x_n x_n^T (full)
    responsibilities: Optional[Tensor]  # [..., N, K]


def _from_logits(x: Tensor, logit: Tensor, full: bool):
    """The statistics from the per-(n, k) logits [B, N, K] of x [B or 1, N, D]."""
    logp = torch.logsumexp(logit, -1)
    log_r = logit - logp.unsqueeze(-1)
    r = log_r.exp()
    r_log_r = torch.where(r == 0, torch.zeros_like(r), r * log_r)  # 0 at r = 0 (log r = -inf), NaN at r = NaN
    nk, sx, sxx = mixture_suffstats_ref(x, r, full)
    return logp.sum(-1), r_log_r.sum((-1, -2)), nk, sx, sxx, r


def mixture_em_stats_ref(x: Tensor, logits: Tensor, means: Tensor, scale: Tensor, cov_type: str = "diag") -> EMStats:
    """EM / VB statistics of x [..., N, D] under a mixture (arguments of :func:`gmmkernels.mixture_stats`)."""
    logit, _ = _component_terms(x, logits, means, scale, cov_type)  # [..., N, K]
    batch, (N, K), D = logit.shape[:-2], logit.shape[-2:], x.shape[-1]
    x3 = x.expand(*batch, N, D).reshape(-1, N, D)
    out = _from_logits(x3, logit.reshape(-1, N, K), cov_type == "full")
    tails = [(), (), (K,), (K, D), (K, D, D) if cov_type == "full" else (K, D), (N, K)]
    return EMStats(*(t.reshape((*batch, *tail)) for t, tail in zip(out, tails)))


def mixture_em_stats_kernel_ref(x: Tensor, means: Tensor, prec: Tensor, logc: Tensor, full: bool):
    """Reference of ``torch.ops.gmmkernels.mixture_em_stats`` (without its ``with_resp`` switch: resp is returned).

    x [B or 1, N, D], means [B, K, D], logc [B, K]; prec = W: diag [B, K, D], full [B, K, D, D] (lower triangle).
    logit[n, k] = logc[k] - |W_k (x_n - mu_k)|^2 / 2. Returns (sum_n log p [B], sum_nk r log r [B], nk [B, K],
    sx [B, K, D], sxx [B, K, D] or [B, K, D, D], resp [B, N, K]).
    """
    delta = x.unsqueeze(-2) - means.unsqueeze(-3)  # [B, N, K, D]
    if full:
        y = (torch.tril(prec).unsqueeze(1) @ delta.unsqueeze(-1)).squeeze(-1)
    else:
        y = prec.unsqueeze(1) * delta
    logit = logc.unsqueeze(1) - 0.5 * (y * y).sum(-1)
    return _from_logits(x, logit, full)
