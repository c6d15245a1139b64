"""Batched Gaussian-mixture fitting: EM, variational Bayes and Gibbs sampling over many independent mixtures.

  fit_em(x, n_components, cov_type)   maximum likelihood by EM, scikit-learn's ``GaussianMixture`` arithmetic
  fit_vb(x, n_components, cov_type)   variational Bayes, scikit-learn's ``BayesianGaussianMixture`` arithmetic
  gibbs(x, n_components, n_chains)    Gibbs sampler of a conjugate diagonal Bayesian GMM, many chains per launch
  kmeans_plusplus(x, n_components)    batched k-means++ seeding

``x`` is [..., N, D]; every index of the leading dimensions is an independent data set with its own mixture.

EM iteration = one fused E-step (``mixture_stats`` with responsibilities: the N x K x D intermediate is never
formed; only the N x K responsibilities are written) + one fused reduction for the sufficient statistics
(``mixture_suffstats``: N_k, sum r x, sum r x^2 or sum r x x^T, fixed summation order, no atomics) + O(K D^2)
closed-form updates. Before fitting, each data set is shifted by its mean (EM and VB are equivariant under
shifts, so the answers are unchanged); this keeps the one-pass covariance formula E[x^2] - E[x]^2 accurate in
float32 (the cancellation behind scikit-learn issue #30382).

In float32 the one-pass covariance is clamped at 0 (diag, spherical) or projected onto the positive semi-definite
cone (full, by an eigenvalue clamp) before ``reg_covar`` is added; float64 follows scikit-learn exactly.
Regularisation and errors follow scikit-learn: ``reg_covar`` is added to every variance (the diagonal for
'full'); a covariance that is still not positive definite raises ``ValueError`` naming the fix. A component
that loses all its points keeps weight ~0, mean 0 (of the centred data) and variance ``reg_covar``, as in
scikit-learn.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor

from . import _backend
from . import fit_reference as _fref
from . import ops as _ops
from .mixture import GaussianMixture

COV_TYPES = ("diag", "spherical", "full")


# ----------------------------------------------------------------------------------------------
# fused building blocks


def mixture_suffstats(x: Tensor, resp: Tensor, full: bool = False, *, backend: str = "auto"):
    """(N_k [..., K], sum_n r x [..., K, D], sum_n r x^2 [..., K, D] or sum_n r x x^T [..., K, D, D]).

    x [..., N, D] (leading dims broadcast against resp's), resp [..., N, K]. Native kernels sum in a fixed order."""
    fn = "mixture_suffstats"
    if not isinstance(x, Tensor) or not isinstance(resp, Tensor):
        raise TypeError(f"{fn}: 'x' and 'resp' must be tensors")
    if x.dim() < 2 or resp.dim() < 2:
        raise ValueError(f"{fn}: 'x' must be [..., N, D] and 'resp' [..., N, K], got {tuple(x.shape)} and {tuple(resp.shape)}")
    if x.shape[-2] != resp.shape[-2]:
        raise ValueError(f"{fn}: 'x' has N={x.shape[-2]} points but 'resp' has {resp.shape[-2]}")
    if x.device != resp.device:
        raise ValueError(f"{fn}: 'resp' is on {resp.device} but 'x' is on {x.device}")
    batch = torch.broadcast_shapes(x.shape[:-2], resp.shape[:-2])
    N, D, K = x.shape[-2], x.shape[-1], resp.shape[-1]
    B = math.prod(batch)
    dt = torch.promote_types(x.dtype, resp.dtype)
    if dt in (torch.float16, torch.bfloat16):
        dt = torch.float32
    x, resp = x.to(dt), resp.to(dt)
    r3 = resp.expand(*batch, N, K).reshape(B, N, K)
    x3 = x.reshape(1, N, D) if x.dim() == 2 or math.prod(x.shape[:-2]) == 1 else x.expand(*batch, N, D).reshape(B, N, D)
    key = "CUDA" if x.device.type == "cuda" else "CPU"
    if backend not in ("auto", "reference", "cpu", "cuda"):
        raise ValueError(f"{fn}: argument 'backend' must be one of ('auto', 'reference', 'cpu', 'cuda'), got {backend!r}")
    native = _backend.has_kernel(fn, key) and backend != "reference"
    if backend in ("cpu", "cuda") and not native:
        raise RuntimeError(f"{fn}: backend={backend!r} needs the native extension with a {key} kernel")
    if native:
        nk, sx, sxx = torch.ops.gmmkernels.mixture_suffstats(x3.contiguous(), r3.contiguous(), bool(full))
    else:
        nk, sx, sxx = _fref.mixture_suffstats_ref(x3, r3, bool(full))
    tail = (D, D) if full else (D,)
    return nk.reshape(*batch, K), sx.reshape(*batch, K, D), sxx.reshape(*batch, K, *tail)


def kmeans_plusplus(x: Tensor, n_components: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Indices [..., K] of k-means++ seeds in each data set of x [..., N, D]."""
    batch, N, D = x.shape[:-2], x.shape[-2], x.shape[-1]
    idx = _fref.kmeans_plusplus_ref(x.reshape(-1, N, D), n_components, generator)
    return idx.reshape(*batch, n_components)


# ----------------------------------------------------------------------------------------------
# EM


class FitResult(NamedTuple):
    """Result of :func:`fit_em` / :func:`fit_vb`. Per-mixture tensors have the data's batch shape."""

    mixture: GaussianMixture  # fitted mixture (weights, means, covariances in the original coordinates)
    lower_bound: Tensor  # EM: mean log-likelihood; VB: ELBO (scikit-learn's ``lower_bound_``)
    n_iter: Tensor  # iterations run, per mixture
    converged: Tensor  # |change of lower bound| < tol, per mixture
    extras: dict  # VB: posterior hyper-parameters (weight_concentration, mean_precision, degrees_of_freedom, ...)


def _check_fit_inputs(fn: str, x: Tensor, K: int, cov_type: str, max_iter: int, tol: float, reg_covar: float):
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{fn}: argument 'x' must be a floating-point tensor")
    if x.dim() < 2:
        raise ValueError(f"{fn}: argument 'x' must have shape [..., N, D], got {tuple(x.shape)}")
    if cov_type not in COV_TYPES:
        raise ValueError(f"{fn}: argument 'cov_type' must be one of {COV_TYPES}, got {cov_type!r}")
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"{fn}: argument 'n_components' must be a positive int, got {K!r}")
    N = x.shape[-2]
    if K > N:
        raise ValueError(f"{fn}: n_components={K} exceeds the number of points N={N}")
    if x.shape[-1] == 0:
        raise ValueError(f"{fn}: argument 'x' has D=0 dimensions")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{fn}: argument 'x' contains NaN or infinite values")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"{fn}: argument 'max_iter' must be an int >= 1, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"{fn}: argument 'tol' must be >= 0, got {tol!r}")
    if not reg_covar >= 0:
        raise ValueError(f"{fn}: argument 'reg_covar' must be >= 0, got {reg_covar!r}")


def _covariances(nk, sx, sxx, cov_type, reg_covar):
    """Means and covariances from sufficient statistics, scikit-learn's ``_estimate_gaussian_parameters``."""
    eps = 10 * torch.finfo(nk.dtype).eps
    nk = nk + eps
    mu = sx / nk[..., None]
    low = nk.dtype != torch.float64  # one-pass E[x^2] - E[x]^2 can go slightly negative by rounding: clamp / project
    if cov_type == "full":
        D = mu.shape[-1]
        cov = sxx / nk[..., None, None] - mu[..., :, None] * mu[..., None, :]
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        if low:
            lam, V = torch.linalg.eigh(cov)
            cov = (V * lam.clamp_min(0).unsqueeze(-2)) @ V.transpose(-1, -2)
        cov = cov + reg_covar * torch.eye(D, dtype=mu.dtype, device=mu.device)
    else:
        cov = sxx / nk[..., None] - mu * mu
        cov = (cov.clamp_min(0) if low else cov) + reg_covar
        if cov_type == "spherical":
            cov = cov.mean(-1)
    return nk, mu, cov


def _scale_from_cov(fn: str, cov: Tensor, cov_type: str) -> Tensor:
    if cov_type == "full":
        L, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):
            raise ValueError(
                f"{fn}: fitting failed because some components have ill-defined (singular) empirical covariance, for "
                "example collapsed samples or duplicate points. Increase 'reg_covar', decrease 'n_components', or scale the data."
            )
        return L
    if bool((cov <= 0).any()):
        raise ValueError(
            f"{fn}: fitting failed because some components have non-positive variance (degenerate data with reg_covar=0). "
            "Increase 'reg_covar'."
        )
    return cov.sqrt()


def _scale_from_precision(P: Tensor, cov_type: str) -> Tensor:
    if cov_type == "full":
        return torch.linalg.cholesky(torch.linalg.inv(P))
    return P.rsqrt()


def _init_resp(x3: Tensor, K: int, init: str, generator, fn: str) -> Tensor:
    B, N, D = x3.shape
    if init == "random":
        r = torch.rand(B, N, K, generator=generator, dtype=x3.dtype, device=x3.device)
        return r / r.sum(-1, keepdim=True)
    idx = _fref.kmeans_plusplus_ref(x3, K, generator)
    if init == "k-means++":  # scikit-learn's init_params='k-means++': one-hot at the seeds only
        r = torch.zeros(B, N, K, dtype=x3.dtype, device=x3.device)
        r[torch.arange(B, device=x3.device)[:, None], idx, torch.arange(K, device=x3.device)] = 1
        return r
    if init == "kmeans":  # k-means++ seeds + Lloyd iterations, hard labels (scikit-learn's default init_params='kmeans')
        c = x3[torch.arange(B, device=x3.device)[:, None], idx]
        for _ in range(100):
            lab = torch.cdist(x3, c).argmin(-1)
            oh = torch.nn.functional.one_hot(lab, K).to(x3.dtype)
            cnt = oh.sum(1)
            newc = torch.where(cnt[..., None] > 0, (oh.transpose(1, 2) @ x3) / cnt.clamp_min(1)[..., None], c)
            if torch.equal(newc, c):
                break
            c = newc
        return torch.nn.functional.one_hot(torch.cdist(x3, c).argmin(-1), K).to(x3.dtype)
    raise ValueError(f"{fn}: argument 'init' must be 'kmeans', 'k-means++', 'random', a GaussianMixture or resp, got {init!r}")


def fit_em(
    x: Tensor,
    n_components: int,
    cov_type: str = "diag",
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: Union[str, GaussianMixture, Tensor] = "kmeans",
    weights_init: Optional[Tensor] = None,
    means_init: Optional[Tensor] = None,
    precisions_init: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    backend: str = "auto",
) -> FitResult:
    """Fit a Gaussian mixture to each data set of x [..., N, D] by EM (scikit-learn ``GaussianMixture`` semantics).

    init: 'kmeans' (k-means++ + Lloyd, hard labels), 'k-means++' (one-hot at the seeds, as scikit-learn's
    init_params='k-means++'), 'random', initial responsibilities [..., N, K], or a GaussianMixture (start from its
    parameters). weights_init [..., K], means_init [..., K, D] and precisions_init (scikit-learn's shapes:
    diag [..., K, D], spherical [..., K], full [..., K, D, D] precision matrices) override the initial M-step, as in
    scikit-learn. Convergence per mixture: |lower_bound - previous| < tol; converged mixtures stop updating.
    ``backend`` is passed to the fused E-step (``mixture_stats``).
    """
    fn = "fit_em"
    K = n_components
    _check_fit_inputs(fn, x, K, cov_type, max_iter, tol, reg_covar)
    batch, N, D = x.shape[:-2], x.shape[-2], x.shape[-1]
    B = math.prod(batch)
    dt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    x3 = x.to(dt).reshape(B, N, D)
    shift = x3.mean(1, keepdim=True)
    xc = x3 - shift
    full = cov_type == "full"

    # initial parameters
    if isinstance(init, GaussianMixture):
        if init.K != K or init.D != D or init.cov_type != cov_type:
            raise ValueError(f"{fn}: the init mixture has K={init.K}, D={init.D}, cov_type={init.cov_type!r}")
        logits = init.logits.detach().to(dt).expand(*batch, K).reshape(B, K)
        means = init.means.detach().to(dt).expand(*batch, K, D).reshape(B, K, D) - shift
        tail = (K, D, D) if full else (K, D) if cov_type == "diag" else (K,)
        scale = init.scale.detach().to(dt).expand(*batch, *tail).reshape(B, *tail)
    else:
        if isinstance(init, Tensor):
            if init.shape[-2:] != (N, K):
                raise ValueError(f"{fn}: initial responsibilities must be [..., N={N}, K={K}], got {tuple(init.shape)}")
            resp = init.to(dt).expand(*batch, N, K).reshape(B, N, K)
        else:
            resp = _init_resp(xc, K, init, generator, fn)
        nk, sx, sxx = mixture_suffstats(xc, resp, full)
        nk, means, cov = _covariances(nk, sx, sxx, cov_type, reg_covar)
        logits = (nk / nk.sum(-1, keepdim=True)).log()
        if weights_init is not None:
            logits = weights_init.to(dt).expand(*batch, K).reshape(B, K).log()
        if means_init is not None:
            means = means_init.to(dt).expand(*batch, K, D).reshape(B, K, D) - shift
        if precisions_init is not None:
            tail = (K, D, D) if full else (K, D) if cov_type == "diag" else (K,)
            scale = _scale_from_precision(precisions_init.to(dt).expand(*batch, *tail).reshape(B, *tail), cov_type)
        else:
            scale = _scale_from_cov(fn, cov, cov_type)

    lower = torch.full((B,), -math.inf, dtype=dt, device=x.device)
    n_iter = torch.zeros(B, dtype=torch.long, device=x.device)
    converged = torch.zeros(B, dtype=torch.bool, device=x.device)
    for it in range(1, max_iter + 1):
        st = _ops.mixture_stats(xc, logits, means, scale, cov_type, with_score=False, with_resp=True, backend=backend)
        lb = st.log_prob.mean(-1)
        nk, sx, sxx = mixture_suffstats(xc, st.responsibilities, full)
        nk, mu_new, cov = _covariances(nk, sx, sxx, cov_type, reg_covar)
        sc_new = _scale_from_cov(fn, cov, cov_type)
        lg_new = (nk / nk.sum(-1, keepdim=True)).log()
        active = ~converged
        a1 = active[:, None]
        logits = torch.where(a1, lg_new, logits)
        means = torch.where(a1[..., None], mu_new, means)
        scale = torch.where(active.view(B, *([1] * (scale.dim() - 1))), sc_new, scale)
        change = lb - lower
        lower = torch.where(active, lb, lower)
        n_iter = torch.where(active, torch.full_like(n_iter, it), n_iter)
        converged = converged | (active & (change.abs() < tol))
        if bool(converged.all()):
            break
    mix = GaussianMixture(logits.reshape(*batch, K), (means + shift).reshape(*batch, K, D),
                          scale.reshape(*batch, *scale.shape[1:]), cov_type)
    return FitResult(mix, lower.reshape(batch), n_iter.reshape(batch), converged.reshape(batch), {})


# ----------------------------------------------------------------------------------------------
# variational Bayes (scikit-learn BayesianGaussianMixture arithmetic, sklearn/mixture/_bayesian_mixture.py)


def fit_vb(
    x: Tensor,
    n_components: int,
    cov_type: str = "diag",
    *,
    weight_concentration_prior_type: str = "dirichlet_process",
    weight_concentration_prior: Optional[float] = None,
    mean_precision_prior: Optional[float] = None,
    mean_prior: Optional[Tensor] = None,
    degrees_of_freedom_prior: Optional[float] = None,
    covariance_prior: Optional[Tensor] = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: Union[str, Tensor] = "kmeans",
    generator: Optional[torch.Generator] = None,
    backend: str = "auto",
) -> FitResult:
    """Variational Bayes for a Gaussian mixture on each data set of x [..., N, D].

    Weights: Dirichlet distribution or (truncated, stick-breaking) Dirichlet process; means and precisions:
    Normal-Wishart ('full'), Normal-Gamma per dimension ('diag') or per component ('spherical'), with scikit-learn's
    defaults (weight concentration 1/K, mean precision 1, mean prior = data mean, dof = D, covariance prior = data
    covariance / variance). The returned mixture holds the posterior-mean weights, the means and the covariances
    (the scale matrices W^-1 / nu, as scikit-learn's ``covariances_``). ``extras`` holds the hyper-parameters.
    """
    fn = "fit_vb"
    K = n_components
    _check_fit_inputs(fn, x, K, cov_type, max_iter, tol, reg_covar)
    if weight_concentration_prior_type not in ("dirichlet_process", "dirichlet_distribution"):
        raise ValueError(f"{fn}: weight_concentration_prior_type must be 'dirichlet_process' or 'dirichlet_distribution'")
    batch, N, D = x.shape[:-2], x.shape[-2], x.shape[-1]
    B = math.prod(batch)
    dt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    dev = x.device
    x3 = x.to(dt).reshape(B, N, D)
    shift = x3.mean(1, keepdim=True)
    xc = x3 - shift
    full = cov_type == "full"
    dp = weight_concentration_prior_type == "dirichlet_process"
    wcp = 1.0 / K if weight_concentration_prior is None else float(weight_concentration_prior)
    mpp = 1.0 if mean_precision_prior is None else float(mean_precision_prior)
    m0 = (torch.zeros(B, D, dtype=dt, device=dev) if mean_prior is None
          else mean_prior.to(dt).expand(*batch, D).reshape(B, D) - shift[:, 0])
    dofp = float(D) if degrees_of_freedom_prior is None else float(degrees_of_freedom_prior)
    if dofp <= D - 1:
        raise ValueError(f"{fn}: degrees_of_freedom_prior must be > D - 1 = {D - 1}, got {dofp}")
    if covariance_prior is None:
        if full:
            covp = xc.transpose(1, 2) @ xc / max(N - 1, 1)  # np.cov (ddof=1)
        else:
            covp = (xc * xc).sum(1) / max(N - 1, 1)  # np.var(ddof=1), as scikit-learn
            if cov_type == "spherical":
                covp = covp.mean(-1)
    else:
        tail = (D, D) if full else (D,) if cov_type == "diag" else ()
        covp = covariance_prior.to(dt).expand(*batch, *tail).reshape(B, *tail)

    if isinstance(init, Tensor):
        resp = init.to(dt).expand(*batch, N, K).reshape(B, N, K)
    else:
        resp = _init_resp(xc, K, init, generator, fn)

    lgamma, digamma = torch.lgamma, torch.digamma
    ar = torch.arange(D, dtype=dt, device=dev)

    def m_step(resp):
        nk, sx, sxx = mixture_suffstats(xc, resp, full)
        nk, xk, sk = _covariances(nk, sx, sxx, cov_type, reg_covar)
        if dp:
            tail = nk.flip(-1).cumsum(-1).flip(-1)
            wc = (1.0 + nk, wcp + torch.cat([tail[:, 1:], torch.zeros_like(tail[:, :1])], -1))
        else:
            wc = wcp + nk
        mp = mpp + nk
        means = (mpp * m0[:, None] + nk[..., None] * xk) / mp[..., None]
        dof = dofp + nk
        diff = xk - m0[:, None]
        if full:
            cov = covp[:, None] + nk[..., None, None] * sk + (nk * mpp / mp)[..., None, None] * diff[..., :, None] * diff[..., None, :]
            cov = cov / dof[..., None, None]
        elif cov_type == "diag":
            cov = (covp[:, None] + nk[..., None] * (sk + (mpp / mp)[..., None] * diff * diff)) / dof[..., None]
        else:
            cov = (covp[:, None] + nk * (sk + mpp / mp * (diff * diff).mean(-1))) / dof
        return wc, mp, means, dof, cov

    def log_det_prec_chol(scale):
        if full:
            return -torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
        if cov_type == "diag":
            return -torch.log(scale).sum(-1)
        return -D * torch.log(scale)

    def e_log_weights(wc):
        if dp:
            a, b = wc
            ds = digamma(a + b)
            da, db = digamma(a) - ds, digamma(b) - ds
            return da + torch.cat([torch.zeros_like(db[:, :1]), db.cumsum(-1)[:, :-1]], -1)
        return digamma(wc) - digamma(wc.sum(-1, keepdim=True))

    wc, mp, means, dof, cov = m_step(resp)
    lower = torch.full((B,), -math.inf, dtype=dt, device=dev)
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    state = (wc, mp, means, dof, cov)
    for it in range(1, max_iter + 1):
        wc, mp, means, dof, cov = state
        scale = _scale_from_cov(fn, cov, cov_type)
        log_lambda = D * math.log(2.0) + digamma(0.5 * (dof[..., None] - ar)).sum(-1)
        c = e_log_weights(wc) - 0.5 * D * torch.log(dof) + 0.5 * (log_lambda - D / mp)
        st = _ops.mixture_stats(xc, c, means, scale, cov_type, with_score=False, with_resp=True, backend=backend)
        resp = st.responsibilities
        new = m_step(resp)
        wc2, mp2, means2, dof2, cov2 = new
        scale2 = _scale_from_cov(fn, cov2, cov_type)
        ldp = log_det_prec_chol(scale2) - 0.5 * D * torch.log(dof2)
        log_wishart = -(dof2 * ldp + dof2 * D * 0.5 * math.log(2.0) + lgamma(0.5 * (dof2[..., None] - ar)).sum(-1)).sum(-1)
        if dp:
            a, b = wc2
            log_norm_w = -(lgamma(a) + lgamma(b) - lgamma(a + b)).sum(-1)
        else:
            log_norm_w = lgamma(wc2.sum(-1)) - lgamma(wc2).sum(-1)
        ent = -(resp * torch.log(resp.clamp_min(torch.finfo(dt).tiny))).sum((-1, -2))
        lb = ent - log_wishart - log_norm_w - 0.5 * D * torch.log(mp2).sum(-1)
        active = ~converged

        def sel(new_t, old_t):
            return torch.where(active.view(B, *([1] * (new_t.dim() - 1))), new_t, old_t)

        if dp:
            wcs = (sel(wc2[0], wc[0]), sel(wc2[1], wc[1]))
        else:
            wcs = sel(wc2, wc)
        state = (wcs, sel(mp2, mp), sel(means2, means), sel(dof2, dof), sel(cov2, cov))
        change = lb - lower
        lower = torch.where(active, lb, lower)
        n_iter = torch.where(active, torch.full_like(n_iter, it), n_iter)
        converged = converged | (active & (change.abs() < tol))
        if bool(converged.all()):
            break
    wc, mp, means, dof, cov = state
    if dp:
        a, b = wc
        w = a / (a + b)
        w = w * torch.cat([torch.ones_like(w[:, :1]), (b / (a + b)).cumprod(-1)[:, :-1]], -1)
        w = w / w.sum(-1, keepdim=True)
    else:
        w = wc / wc.sum(-1, keepdim=True)
    scale = _scale_from_cov(fn, cov, cov_type)
    mix = GaussianMixture(w.log().reshape(*batch, K), (means + shift).reshape(*batch, K, D),
                          scale.reshape(*batch, *scale.shape[1:]), cov_type)
    rs = lambda t: t.reshape(*batch, *t.shape[1:])  # noqa: E731
    extras = {
        "weight_concentration": tuple(rs(t) for t in wc) if dp else rs(wc),
        "mean_precision": rs(mp),
        "degrees_of_freedom": rs(dof),
        "weights": rs(w),
    }
    return FitResult(mix, lower.reshape(batch), n_iter.reshape(batch), converged.reshape(batch), extras)


# ----------------------------------------------------------------------------------------------
# Gibbs sampling


class GibbsPrior(NamedTuple):
    """Conjugate prior: w ~ Dir(alpha 1_K); var_kd ~ InvGamma(a0, b0); mu_kd | var_kd ~ N(m0_d, var_kd / kappa0)."""

    alpha: float = 1.0
    kappa0: float = 0.01
    a0: float = 1.0
    b0: float = 1.0
    m0: Optional[Tensor] = None  # [D]; None: zeros


class GibbsResult(NamedTuple):
    """Final state of every chain (logw [C, K], means / var [C, K, D], z [C, N] int32) and, if asked, the traces
    [S, C, ...] of the kept sweeps."""

    logw: Tensor
    means: Tensor
    var: Tensor
    z: Tensor
    trace: Optional[dict]


def gibbs_sweep(x: Tensor, logw: Tensor, means: Tensor, var: Tensor, prior: GibbsPrior, *, seed: int, step: int,
                backend: str = "auto"):
    """One sweep of C chains in one launch. x [N, D] (shared by all chains) or [C, N, D]; logw [C, K];
    means, var [C, K, D]. Returns (z [C, N] int32, logw, means, var). Same (seed, step) -> same draws.
    backend 'reference' uses torch's global generator instead of the counter-based streams."""
    fn = "gibbs_sweep"
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or logw.dim() != 2 or means.dim() != 3:
        raise ValueError(f"{fn}: expected x [N, D] or [C, N, D], logw [C, K], means/var [C, K, D]")
    D = x.shape[-1]
    m0 = prior.m0 if prior.m0 is not None else torch.zeros(D)
    m0 = torch.as_tensor(m0, dtype=x.dtype, device=x.device).reshape(D)
    key = "CUDA" if x.device.type == "cuda" else "CPU"
    if backend == "reference" or not _backend.has_kernel(fn, key):
        if backend in ("cpu", "cuda"):
            raise RuntimeError(f"{fn}: backend={backend!r} needs the native extension with a {key} kernel")
        z, lw, mu, v = _fref.gibbs_sweep_ref(x, logw, means, var, m0, prior.alpha, prior.kappa0, prior.a0, prior.b0)
        return z.to(torch.int32), lw, mu, v
    return torch.ops.gmmkernels.gibbs_sweep(x.contiguous(), logw.contiguous(), means.contiguous(), var.contiguous(), m0,
                                            float(prior.alpha), float(prior.kappa0), float(prior.a0), float(prior.b0),
                                            int(seed), int(step))


def gibbs(
    x: Tensor,
    n_components: int,
    n_chains: int = 1,
    n_sweeps: int = 1000,
    *,
    prior: Optional[GibbsPrior] = None,
    seed: int = 0,
    init: Optional[tuple] = None,
    burn_in: int = 0,
    thin: int = 1,
    keep_trace: bool = False,
    backend: str = "auto",
) -> GibbsResult:
    """Run ``n_chains`` independent Gibbs chains of the conjugate diagonal Bayesian GMM on x [N, D] (one data set for
    all chains) or [C, N, D] (one per chain). One kernel launch per sweep; counter-based random numbers keyed by
    (seed, chain, sweep), so the same seed gives the same chains. ``init`` = (logw, means, var); default: weights
    uniform, means at k-means++ seeds of the data (per chain, drawn from ``seed``), variances = data variance."""
    fn = "gibbs"
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() not in (2, 3):
        raise ValueError(f"{fn}: argument 'x' must be a floating tensor [N, D] or [C, N, D]")
    K, C = n_components, n_chains
    N, D = x.shape[-2:]
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"{fn}: n_components must be a positive int, got {K!r}")
    if x.dim() == 3 and x.shape[0] != C:
        raise ValueError(f"{fn}: x has {x.shape[0]} data sets but n_chains={C}")
    prior = prior or GibbsPrior()
    if min(prior.alpha, prior.kappa0, prior.a0, prior.b0) <= 0:
        raise ValueError(f"{fn}: prior alpha, kappa0, a0, b0 must be positive, got {prior}")
    dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x = x.to(dt)
    if init is None:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        xs = x.expand(C, N, D) if x.dim() == 3 else x.unsqueeze(0).expand(C, N, D)
        if K > N:
            raise ValueError(f"{fn}: n_components={K} exceeds the number of points N={N} (k-means++ initialisation)")
        idx = _fref.kmeans_plusplus_ref(xs.cpu(), K, g).to(x.device)
        means = xs[torch.arange(C, device=x.device)[:, None], idx]
        var = xs.var(1, unbiased=False).clamp_min(1e-6)[:, None].expand(C, K, D).contiguous()
        logw = torch.full((C, K), -math.log(K), dtype=dt, device=x.device)
    else:
        logw, means, var = (t.to(device=x.device, dtype=dt).contiguous() for t in init)
    traces = {"logw": [], "means": [], "var": []} if keep_trace else None
    z = None
    for s in range(n_sweeps):
        z, logw, means, var = gibbs_sweep(x, logw, means, var, prior, seed=seed, step=s, backend=backend)
        if keep_trace and s >= burn_in and (s - burn_in) % thin == 0:
            traces["logw"].append(logw)
            traces["means"].append(means)
            traces["var"].append(var)
    if keep_trace:
        traces = {k: torch.stack(v) if v else None for k, v in traces.items()}
    return GibbsResult(logw, means, var, z, traces)
