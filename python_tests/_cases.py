"""Inputs shared by several test modules: random mixtures and points, small clustered data sets."""
import math

import numpy as np
import torch


def make_mixture(cov_type, batch=(), N=7, K=5, D=3, dtype=torch.float64, device="cpu", scale_lo=0.5, seed=None, spread=1.0):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    kw = dict(dtype=torch.float64, generator=g)
    logits = torch.randn(*batch, K, **kw)
    means = spread * torch.randn(*batch, K, D, **kw)
    if cov_type == "diag":
        scale = torch.rand(*batch, K, D, **kw) + scale_lo
    elif cov_type == "spherical":
        scale = torch.rand(*batch, K, **kw) + scale_lo
    else:
        A = torch.randn(*batch, K, D, D, **kw) * 0.3
        cov = A @ A.transpose(-1, -2) + scale_lo**2 * torch.eye(D, dtype=torch.float64)
        scale = torch.linalg.cholesky(cov)
    x = torch.randn(*batch, N, D, **kw) * 1.5
    return [t.to(device=device, dtype=dtype) for t in (x, logits, means, scale)]


def blobs3(seed=0, n=100, D=3):
    """Three Gaussian blobs of n points each in D dimensions (numpy float64), for the fitting tests."""
    rng = np.random.RandomState(seed)
    return np.concatenate([rng.randn(n, D) * s + m for s, m in [(0.5, 0.0), (1.0, 4.0), (0.7, -4.0)]])


def cov_of(mix):
    """Covariances of a fitted GaussianMixture in scikit-learn's layout (full: matrices; diag/spherical: variances)."""
    return mix.covariance().numpy() if mix.cov_type == "full" else (mix.scale**2).numpy()


def gibbs_two_clusters():
    """50 points of two clusters in 2-D (float64), for the Gibbs tests."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(30, 2, generator=g, dtype=torch.float64) * 0.6 + torch.tensor([-3.0, 0.0], dtype=torch.float64)
    b = torch.randn(20, 2, generator=g, dtype=torch.float64) * 0.9 + torch.tensor([3.0, 1.0], dtype=torch.float64)
    return torch.cat([a, b])


def gibbs_init(C, dtype):
    """(logw, means, var) of C chains started at the two true cluster centers."""
    return (torch.full((C, 2), -math.log(2), dtype=dtype),
            torch.tensor([[-3.0, 0.0], [3.0, 1.0]], dtype=dtype).expand(C, 2, 2).contiguous(),
            torch.ones(C, 2, 2, dtype=dtype))
