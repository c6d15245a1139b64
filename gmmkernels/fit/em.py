"""Batched maximum-likelihood fitting of Gaussian mixtures by EM, with scikit-learn's ``GaussianMixture`` arithmetic.

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
scikit-learn. Equations: docs/kernels.md (mixture_suffstats).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from ..mixture import GaussianMixture
from ..ops.mixture_stats import mixture_stats
from ..ops.mixture_suffstats import mixture_suffstats
from .. import _validate as V
from ._common import (Convergence, FitResult, check_em_init, check_fit_inputs, covariances, init_resp, scale_from_cov,
                      scale_from_precision)

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")


def step_backends(fn: str, backend: str):
    """(E-step backend, statistics backend) of an EM / VB fit: ``backend`` runs both steps; "triton", which has no
    statistics kernel, runs the E-step only (the statistics take the device's native kernel)."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{fn}: argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    return backend, ("auto" if backend == "triton" else backend)


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
    ``backend`` selects the kernels of both steps, the E-step (``mixture_stats``) and the sufficient statistics
    (``mixture_suffstats``); "triton" runs the E-step only (there is no Triton statistics kernel).
    """
    fn = "fit_em"
    K = n_components
    check_fit_inputs(fn, x, K, cov_type, max_iter, tol, reg_covar, generator, init, mixture_init=True)
    check_em_init(fn, x, K, cov_type, weights_init, means_init, precisions_init)
    e_backend, s_backend = step_backends(fn, backend)
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
            raise ValueError(f"{fn}: argument 'init' is a mixture with K={init.K}, D={init.D}, cov_type="
                             f"{init.cov_type!r}, but the fit has K={K}, D={D}, cov_type={cov_type!r}")
        V.tensors(fn, [("x", x), ("init", init.means)], same_dtype=False)
        logits = init.logits.detach().to(dt).expand(*batch, K).reshape(B, K)
        means = init.means.detach().to(dt).expand(*batch, K, D).reshape(B, K, D) - shift
        tail = (K, D, D) if full else (K, D) if cov_type == "diag" else (K,)
        scale = init.scale.detach().to(dt).expand(*batch, *tail).reshape(B, *tail)
    else:
        if isinstance(init, Tensor):
            resp = init.to(dt).expand(*batch, N, K).reshape(B, N, K)
        else:
            resp = init_resp(xc, K, init, generator, fn, e_backend)
        nk, sx, sxx = mixture_suffstats(xc, resp, full, backend=s_backend)
        nk, means, cov = covariances(nk, sx, sxx, cov_type, reg_covar)
        logits = (nk / nk.sum(-1, keepdim=True)).log()
        if weights_init is not None:
            logits = weights_init.to(dt).expand(*batch, K).reshape(B, K).log()
        if means_init is not None:
            means = means_init.to(dt).expand(*batch, K, D).reshape(B, K, D) - shift
        if precisions_init is not None:
            tail = (K, D, D) if full else (K, D) if cov_type == "diag" else (K,)
            scale = scale_from_precision(precisions_init.to(dt).expand(*batch, *tail).reshape(B, *tail), cov_type)
        else:
            scale = scale_from_cov(fn, cov, cov_type)

    conv = Convergence(B, dt, x.device, tol)
    for it in range(1, max_iter + 1):
        st = mixture_stats(xc, logits, means, scale, cov_type, with_score=False, with_resp=True, backend=e_backend)
        lb = st.log_prob.mean(-1)
        nk, sx, sxx = mixture_suffstats(xc, st.responsibilities, full, backend=s_backend)
        nk, mu_new, cov = covariances(nk, sx, sxx, cov_type, reg_covar)
        sc_new = scale_from_cov(fn, cov, cov_type)
        lg_new = (nk / nk.sum(-1, keepdim=True)).log()
        logits, means, scale = conv.keep(lg_new, logits), conv.keep(mu_new, means), conv.keep(sc_new, scale)
        if conv.update(it, lb):
            break
    mix = GaussianMixture(logits.reshape(*batch, K), (means + shift).reshape(*batch, K, D),
                          scale.reshape(*batch, *scale.shape[1:]), cov_type)
    return FitResult(mix, conv.lower.reshape(batch), conv.n_iter.reshape(batch), conv.converged.reshape(batch), {})
