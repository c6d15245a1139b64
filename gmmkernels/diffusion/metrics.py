"""Sample-quality metrics: exact NLL under a known mixture, sliced Wasserstein, MMD, mode coverage,
the Frechet distance in the feature space of a small digits classifier (an FID analogue), and PSNR / SSIM of
reconstructions against the truth (per image); paired comparisons of two arms over matched units and the noise
floor of the digits Frechet distance.

All functions take samples as [N, ...] tensors (flattened to [N, D] inside) and return Python floats or
small dicts, so they go straight into metrics.json; PSNR and SSIM return one value per image (a tensor).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import Tensor

from .. import GaussianMixture


def _flat(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    return x.reshape(x.shape[0], -1).double() if x.dim() != 1 else x.double().unsqueeze(1)


def mixture_nll(x: Tensor, mixture: GaussianMixture) -> float:
    """Mean negative log-likelihood -1/N sum_n log p(x_n) of samples under the exact mixture (nats).

    On true samples it estimates the entropy of the law; samples off the modes score higher."""
    xf = _flat(x).to(mixture.means.dtype)
    return float(-mixture.log_prob(xf).double().mean())


def _quantiles_sorted(v: Tensor, m: int) -> Tensor:
    """Empirical quantile function of each column of v [n, P] sorted, at levels (i + 1/2)/m."""
    n = v.shape[0]
    if n == m:
        return v
    idx = ((torch.arange(m, dtype=torch.float64) + 0.5) * n / m).floor().long().clamp(max=n - 1)
    return v[idx]


def sliced_wasserstein(x: Tensor, y: Tensor, n_proj: int = 1000, p: int = 1, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance: (E_theta W_p^p(theta.x, theta.y))^{1/p} over ``n_proj`` random unit
    directions (fixed ``seed``, so the value is deterministic). 1-D W_p by sorting (quantile matching when
    the sample sizes differ). In 1-D (D = 1) it is the exact empirical W_p."""
    xf, yf = _flat(x), _flat(y)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"sliced_wasserstein: dimensions differ ({xf.shape[1]} vs {yf.shape[1]})")
    D = xf.shape[1]
    if D == 1:
        theta = torch.ones(1, 1, dtype=torch.float64)
    else:
        g = torch.Generator().manual_seed(seed)
        theta = torch.randn(D, n_proj, generator=g, dtype=torch.float64)
        theta = theta / theta.norm(dim=0, keepdim=True)
    px = (xf @ theta).sort(0).values
    py = (yf @ theta).sort(0).values
    m = max(px.shape[0], py.shape[0])
    diff = (_quantiles_sorted(px, m) - _quantiles_sorted(py, m)).abs()
    return float((diff**p).mean() ** (1.0 / p))


def mmd(x: Tensor, y: Tensor, bandwidths: Optional[list] = None, max_n: int = 4000) -> float:
    """Unbiased squared MMD with a sum of Gaussian kernels exp(-|u-v|^2 / (2 h^2)).

    Default bandwidths: the median pairwise distance of the pooled sample times {0.5, 1, 2}. The first
    ``max_n`` points of each sample are used (the cost is quadratic)."""
    xf, yf = _flat(x)[:max_n], _flat(y)[:max_n]
    n, m = xf.shape[0], yf.shape[0]
    if n < 2 or m < 2:
        raise ValueError("mmd: need at least two points in each sample")
    z = torch.cat([xf, yf])
    d2 = torch.cdist(z, z).pow(2)
    if bandwidths is None:
        med = d2[torch.triu_indices(n + m, n + m, 1).unbind()].median().sqrt().item()
        med = med if med > 0 else 1.0
        bandwidths = [0.5 * med, med, 2.0 * med]
    k = sum(torch.exp(-d2 / (2.0 * h * h)) for h in bandwidths)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def mode_coverage(x: Tensor, means: Tensor, std: float, weights: Optional[Tensor] = None, radius: float = 2.0,
                  min_frac: Optional[float] = None) -> Dict:
    """Mode statistics for samples x [N, D] of a mixture with well-separated modes ``means`` [K, D].

    Each sample goes to its nearest mode; it is *on mode* when within ``radius * std`` of it
    (docs/methods.md (SMD) uses 2 sigma). Returns
      ``on_mode``        fraction of samples on a mode
      ``occupancy``      per-mode fraction of the on-mode samples (list of K floats)
      ``modes_covered``  number of modes holding at least ``min_frac`` of the samples (default 1/(5K))
      ``occupancy_tv``   total variation between the occupancy and ``weights`` (uniform by default)
    """
    xf = _flat(x)
    mu = _flat(means)
    K = mu.shape[0]
    d = torch.cdist(xf, mu)
    dmin, idx = d.min(1)
    on = dmin <= radius * std
    counts = torch.bincount(idx[on], minlength=K).double()
    occ = counts / counts.sum().clamp_min(1.0)
    w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights).double().flatten()
    w = w / w.sum()
    min_frac = 1.0 / (5 * K) if min_frac is None else min_frac
    covered = int((counts / max(xf.shape[0], 1) >= min_frac).sum())
    return {
        "on_mode": float(on.double().mean()),
        "occupancy": occ.tolist(),
        "modes_covered": covered,
        "n_modes": K,
        "occupancy_tv": float(0.5 * (occ - w).abs().sum()),
    }


def gaussian_stats(feats: Tensor):
    f = feats.double()
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2}) (the FID formula, Heusel et al. 2017)."""
    mu1, mu2, cov1, cov2 = (torch.as_tensor(v, dtype=torch.float64) for v in (mu1, mu2, cov1, cov2))
    ev, U = torch.linalg.eigh(cov1)
    s1 = (U * ev.clamp_min(0).sqrt()) @ U.T
    m = s1 @ cov2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * tr_sqrt)


def digits_fd(samples: Tensor, reference: Optional[Tensor] = None) -> float:
    """Frechet distance between digits samples [N, 1, 8, 8] (values in [-1, 1]) and the real digits in the
    feature space of the package's small digits classifier (see :mod:`gmmkernels.diffusion.digits_classifier`).
    An FID analogue for 8x8 digits: lower is better; it is NOT comparable with Inception FIDs."""
    from .digits_classifier import digits_features, load_digits_classifier
    from .data import load_digits

    net = load_digits_classifier()
    if reference is None:
        reference = load_digits()[0]
    f1 = digits_features(net, samples)
    f2 = digits_features(net, reference)
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


def digits_class_histogram(samples: Tensor) -> list:
    """Fraction of samples the digits classifier assigns to each class 0..9 (mode coverage for digits)."""
    from .digits_classifier import load_digits_classifier, to_classifier_input

    net = load_digits_classifier()
    with torch.no_grad():
        pred = net(to_classifier_input(samples)).argmax(1)
    return (torch.bincount(pred, minlength=10).double() / max(len(pred), 1)).tolist()


def psnr(x: Tensor, ref: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), per image; x, ref [B, ...]."""
    mse = ((x - ref) ** 2).flatten(1).mean(-1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def ssim(x: Tensor, ref: Tensor, data_range: float = 2.0, win: int = 3) -> Tensor:
    """Mean SSIM (Wang et al. 2004) with a uniform win x win window, per image; x, ref [B, C, H, W]."""
    C1, C2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pool = lambda t: torch.nn.functional.avg_pool2d(t, win, 1)  # noqa: E731
    mx, my = pool(x), pool(ref)
    vx, vy = pool(x * x) - mx * mx, pool(ref * ref) - my * my
    cxy = pool(x * ref) - mx * my
    s = ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))
    return s.flatten(1).mean(-1)


# ---------------------------------------------------------------------------------------------------------
# paired comparisons and noise floors

# two-sided 95% quantiles t_{0.975, df} of Student's t, df = 1..30 (standard tables)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, beyond it the Cornish-Fisher expansion around 1.95996 (error < 1e-3)."""
    if df < 1:
        raise ValueError(f"t_quantile_975: argument 'df' must be >= 1, got {df}")
    if df <= 30:
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df * df)


def paired_stats(a, b, higher_better: bool = False) -> Dict:
    """Paired comparison of arm ``a`` against arm ``b`` over matched units (training seeds, sampler seeds, images):
    d = a - b per unit. Returns n, the means of both arms, ``diff`` (mean d), ``se`` (its standard error),
    ``ci95`` (Student-t interval of the mean difference), ``a_better`` (units where a beats b; ties count for
    neither), ``excludes_zero`` (the interval does not contain 0) and ``a_wins`` (it excludes 0 on a's side).
    With one unit the standard error and interval are NaN and nothing is significant."""
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"paired_stats: arguments 'a' and 'b' must hold the same number (>= 1) of paired values, "
                         f"got {a.numel()} and {b.numel()}")
    d = a - b
    n = d.numel()
    mean = float(d.mean())
    if n > 1:
        se = float(d.std(unbiased=True) / math.sqrt(n))
        h = t_quantile_975(n - 1) * se
        lo, hi = mean - h, mean + h
    else:
        se = lo = hi = float("nan")
    better = (d > 0) if higher_better else (d < 0)
    excl = bool(n > 1 and (lo > 0 or hi < 0))
    wins = bool(excl and ((lo > 0) if higher_better else (hi < 0)))
    return {"n": n, "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": mean, "se": se, "ci95": [lo, hi],
            "a_better": int(better.sum()), "excludes_zero": excl, "a_wins": wins, "higher_better": bool(higher_better)}


def format_paired(p: Dict, fmt: str = ".3g") -> str:
    """One line of :func:`paired_stats`: 'a vs b: diff ± se (95% [lo, hi]), a better on k/n'."""
    return (f"{p['mean_a']:{fmt}} vs {p['mean_b']:{fmt}}: diff {p['diff']:+{fmt}} ± {p['se']:{fmt}} "
            f"(95% [{p['ci95'][0]:{fmt}}, {p['ci95'][1]:{fmt}}]), better on {p['a_better']}/{p['n']}")


def digits_fd_floor(n: int, reps: int = 5, seed: int = 0, pool: Optional[Tensor] = None,
                    reference: Optional[Tensor] = None) -> Dict:
    """Noise floor of :func:`digits_fd` at sample size n: the FD of ``reps`` random n-subsets of real digits
    (``pool``, default all 1797) against ``reference`` (default all 1797). Returns mean, std, n, reps. A subset of
    the reference scores lower than independent data would, so this is a lower bound on the floor."""
    from .data import load_digits

    data = load_digits()[0]
    pool = data if pool is None else pool
    reference = data if reference is None else reference
    if not 2 <= n <= pool.shape[0]:
        raise ValueError(f"digits_fd_floor: argument 'n' must lie in [2, {pool.shape[0]}], got {n}")
    g = torch.Generator().manual_seed(seed)
    v = torch.tensor([digits_fd(pool[torch.randperm(pool.shape[0], generator=g)[:n]], reference) for _ in range(reps)],
                     dtype=torch.float64)
    return {"mean": float(v.mean()), "std": float(v.std()) if reps > 1 else 0.0, "n": n, "reps": reps}
