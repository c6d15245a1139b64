"""Pure-PyTorch references of the M-step statistics: the specification and test oracle of
``torch.ops.gmmkernels.mixture_suffstats``, and the eager EM baseline of the benchmarks (docs/kernels.md
(mixture_suffstats)).

  mixture_suffstats_ref  M-step sufficient statistics (what the native op computes)
  em_step_ref            one materialising EM iteration (E-step over N x K x D, then M-step), scikit-learn's arithmetic
Shapes: x [B, N, D] (or [1, N, D] shared by all B mixtures), resp [B, N, K].
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import mixture_stats as _ref


def mixture_suffstats_ref(x: Tensor, resp: Tensor, full: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """(nk [B,K], sum_n r x [B,K,D], sum_n r x^2 [B,K,D] or sum_n r x x^T [B,K,D,D])."""
    nk = resp.sum(-2)
    sx = resp.transpose(-1, -2) @ x
    if full:
        sxx = torch.einsum("bnk,bni,bnj->bkij", resp, x.expand(resp.shape[0], *x.shape[1:]), x.expand(resp.shape[0], *x.shape[1:]))
    else:
        sxx = resp.transpose(-1, -2) @ (x * x)
    return nk, sx, sxx


def em_step_ref(x: Tensor, weights: Tensor, means: Tensor, cov: Tensor, cov_type: str, reg_covar: float = 1e-6):
    """One EM iteration with scikit-learn's arithmetic (sklearn/mixture/_gaussian_mixture.py), materialising N x K x D.

    x [B,N,D]; weights [B,K]; means [B,K,D]; cov: diag [B,K,D] variances, spherical [B,K], full [B,K,D,D].
    Returns (weights, means, cov, mean log-likelihood under the *input* parameters [B]).
    """
    if cov_type == "full":
        scale = torch.linalg.cholesky(cov)
    else:
        scale = cov.sqrt()
    lp, _, resp = _ref.mixture_stats_ref(x, weights.log(), means, scale, cov_type)
    eps = 10 * torch.finfo(x.dtype).eps
    nk = resp.sum(-2) + eps
    mu = (resp.transpose(-1, -2) @ x) / nk[..., None]
    if cov_type == "full":
        diff = x.unsqueeze(-3) - mu.unsqueeze(-2)  # [B,K,N,D]
        c = torch.einsum("bnk,bkni,bknj->bkij", resp, diff, diff) / nk[..., None, None]
        c = c + reg_covar * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    else:
        c = (resp.transpose(-1, -2) @ (x * x)) / nk[..., None] - mu * mu + reg_covar
        if cov_type == "spherical":
            c = c.mean(-1)
    w = nk / nk.sum(-1, keepdim=True)
    return w, mu, c, lp.mean(-1)
