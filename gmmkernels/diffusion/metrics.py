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


# -- paired comparisons and noise floors -------------------------------------------------------------

def _t_abs_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with an integer ``df`` >= 1, by the finite series of Abramowitz & Stegun
    26.7.3 / 26.7.4 in theta = atan(t / sqrt(df)) (exact up to rounding)."""
    th = math.atan(t / math.sqrt(df))
    s, c = math.sin(th), math.cos(th)
    if df % 2:  # odd: (2/pi) (theta + sin(theta) [cos + (2/3) cos^3 + ... + (2.4...(df-3))/(3.5...(df-2)) cos^(df-2)])
        acc = term = c if df > 1 else 0.0
        for k in range(3, df - 1, 2):
            term *= c * c * (k - 1) / k
            acc += term
        return 2.0 / math.pi * (th + s * acc)
    acc = term = 1.0  # even: sin(theta) [1 + (1/2) cos^2 + (1.3)/(2.4) cos^4 + ... + cos^(df-2) term]
    for k in range(2, df - 1, 2):
        term *= c * c * (k - 1) / k
        acc += term
    return s * acc


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (integer >= 1, 0 < p < 1), by bisection on the
    exact CDF to 1e-12 (e.g. t_quantile(0.975, 2) = 4.3027)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"t_quantile: argument 'df' must be an int >= 1, got {df!r}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: argument 'p' must lie in (0, 1), got {p!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 2.0 * p - 1.0
    lo, hi = 0.0, 1.0
    while _t_abs_cdf(hi, df) < target:
        hi *= 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_abs_cdf(mid, df) < target else (lo, mid)
    return 0.5 * (lo + hi)


def paired_difference(a, b, units=None, level: float = 0.95) -> Dict:
    """Summary of the paired differences d_i = a_i - b_i, where pair i ran both arms on the same random numbers.

    ``units`` (optional, one label per pair, e.g. the training seed of the model both arms sampled from): the
    differences are averaged within each unit first, and the statistics are taken over the unit means, so the
    interval speaks for new units (new training runs), not only for new sampler seeds of the same models.
    Returns ``n`` (units), ``n_pairs``, ``mean``, ``se`` (sd / sqrt(n)), ``ci`` (the two-sided Student-t interval at
    ``level``; NaN when n < 2), ``excludes_zero``, ``n_below`` / ``n_above`` (units with a mean difference < 0 / > 0)
    and ``per_unit`` (the unit means, in the order the units first appear)."""
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference: arguments 'a' and 'b' must be non-empty and of one length, got "
                         f"{len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    if units is None:
        per = d
    else:
        units = list(units)
        if len(units) != len(d):
            raise ValueError(f"paired_difference: argument 'units' must hold one label per pair ({len(d)}), got "
                             f"{len(units)}")
        groups: Dict = {}
        for u, v in zip(units, d):
            groups.setdefault(u, []).append(v)
        per = [sum(v) / len(v) for v in groups.values()]
    n = len(per)
    mean = sum(per) / n
    nan = float("nan")
    if n > 1:
        se = math.sqrt(sum((v - mean) ** 2 for v in per) / (n - 1) / n)
        h = t_quantile(0.5 + level / 2.0, n - 1) * se
        ci = [mean - h, mean + h]
    else:
        se, ci = nan, [nan, nan]
    return {"n": n, "n_pairs": len(d), "mean": mean, "se": se, "ci": ci, "level": level,
            "excludes_zero": bool(n > 1 and (ci[0] > 0 or ci[1] < 0)),
            "n_below": sum(v < 0 for v in per), "n_above": sum(v > 0 for v in per), "per_unit": per}


def paired_verdict(d: Dict, lower_is_better: bool = True, tol: float = 0.0) -> str:
    """'better' / 'worse' (the first arm against the second) when the interval of a :func:`paired_difference`
    excludes zero and the mean difference exceeds ``tol`` in size (the metric's resolution, e.g. a small fraction of
    its noise floor: common random numbers make even rounding-level differences significant); 'no difference'
    otherwise; 'inconclusive (one unit)' with a single unit."""
    if d["n"] < 2:
        return "inconclusive (one unit)"
    if not d["excludes_zero"] or abs(d["mean"]) <= tol:
        return "no difference"
    return "better" if (d["mean"] < 0) == lower_is_better else "worse"


def paired_contrast(a, b, units=None, floor: Optional[float] = None, lower_is_better: bool = True,
                    resolution: float = 1e-3) -> Dict:
    """:func:`paired_difference` of a - b plus what a table needs: the largest |a_i - b_i| over the pairs, |mean| as a
    fraction of the metric's noise ``floor`` (when given and non-zero) and the :func:`paired_verdict`, with a
    resolution of ``resolution`` x ``floor``."""
    d = paired_difference(a, b, units=units)
    d["max_abs_pair_difference"] = max(abs(float(x) - float(y)) for x, y in zip(a, b))
    d["fraction_of_floor"] = abs(d["mean"]) / floor if floor else float("nan")
    d["verdict"] = paired_verdict(d, lower_is_better, tol=resolution * abs(floor or 0.0))
    return d


def format_paired(d: Dict, fmt: str = ".3f") -> str:
    """'-1.76 +- 0.09 [95% CI -1.96, -1.56], 8/8 below 0' for a :func:`paired_difference`."""
    agree = max(d["n_below"], d["n_above"])
    side = "below" if d["n_below"] >= d["n_above"] else "above"
    return (f"{d['mean']:+{fmt}} +- {d['se']:{fmt}} [{100 * d['level']:.0f}% CI {d['ci'][0]:+{fmt}}, "
            f"{d['ci'][1]:+{fmt}}], {agree}/{d['n']} {side} 0")


def real_split_floor(data: Tensor, metric, n_splits: int = 8, seed: int = 0, n: Optional[int] = None) -> Dict:
    """A metric's own noise floor on a finite real data set: ``metric(A, B)`` for ``n_splits`` random splits of
    ``data`` into two disjoint parts A and B (sizes n and len(data) - n; default halves), i.e. the value the metric
    gives two independent samples of real data. Returns mean, sd and the values."""
    N = data.shape[0]
    n = N // 2 if n is None else int(n)
    if not 1 < n < N - 1:
        raise ValueError(f"real_split_floor: argument 'n' must leave at least two points on each side of {N}, got {n}")
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(n_splits):
        p = torch.randperm(N, generator=g)
        vals.append(float(metric(data[p[:n]], data[p[n:]])))
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else float("nan")
    return {"mean": m, "sd": sd, "values": vals, "n": n, "n_rest": N - n}


def pixel_fd(x: Tensor, reference: Tensor) -> float:
    """Frechet distance between two samples in pixel space (each flattened to [N, D])."""
    return frechet_distance(*gaussian_stats(_flat(x)), *gaussian_stats(_flat(reference)))


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}, the factor of a two-sided 95% Student-t interval (:func:`t_quantile`)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"t_quantile_975: argument 'df' must be >= 1, got {df!r}")
    return t_quantile(0.975, df)


def paired_stats(a, b, higher_better: bool = False) -> Dict:
    """Paired comparison of arm ``a`` against arm ``b`` over matched units (training seeds, sampler seeds, images):
    d = a - b per unit (:func:`paired_difference`). Returns n, the means of both arms, ``diff`` (mean d), ``se`` (its
    standard error), ``ci95`` (Student-t interval of the mean difference), ``a_better`` (units where a beats b; ties
    count for neither), ``excludes_zero`` (the interval does not contain 0) and ``a_wins`` (it excludes 0 on a's
    side). With one unit the standard error and interval are NaN and nothing is significant."""
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"paired_stats: arguments 'a' and 'b' must hold the same number (>= 1) of paired values, "
                         f"got {a.numel()} and {b.numel()}")
    d = paired_difference(a.tolist(), b.tolist())
    lo, hi = d["ci"]
    excl = d["excludes_zero"]
    wins = bool(excl and ((lo > 0) if higher_better else (hi < 0)))
    return {"n": d["n"], "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": d["mean"], "se": d["se"],
            "ci95": [lo, hi], "a_better": d["n_above"] if higher_better else d["n_below"], "excludes_zero": excl,
            "a_wins": wins, "higher_better": bool(higher_better)}


def format_paired_stats(p: Dict, fmt: str = ".3g") -> str:
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
