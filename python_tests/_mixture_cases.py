"""Random mixtures and points shared by the mixture-op tests."""
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
