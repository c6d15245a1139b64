"""Batched maximum-likelihood fitting of Gaussian mixtures by EM, with scikit-learn's ``GaussianMixture`` arithmetic.

``x`` is [..., N, D]; every index of the leading dimensions is an independent data set with its own mixture.

EM iteration = one pass of the fused ``mixture_em_stats`` over the data (E-step and sufficient statistics N_k,
sum r x, sum r x^2 or sum r x x^T together; the responsibilities never leave the kernel's cache; fixed summation
order, no atomics) + O(K D^2) closed-form updates (the native ``mixture_em_mstep``). In memory, the iterations run
in one native call (``mixture_em_iterate``) until a mixture converges or an M-step needs the host path; the Python
loop then goes on with the same operations. The same iteration runs on data in chunks or spread over
processes (gmmkernels/fit/chunked.py), whose statistics are sums. Before fitting, each data set is shifted by its mean (EM and VB are equivariant under
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
from ..ops.mixture_em_stats import em_iterate_kernel, em_mstep_kernel
from ..ops.mixture_suffstats import mixture_suffstats
from .. import _validate as V
from ._common import (Convergence, FitResult, check_em_init, check_fit_inputs, covariances, init_resp, scale_from_cov,
                      scale_from_precision)
from ._data import InMemory, kernel_params, mstep_backend, pass_backend

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")
INIT_METHODS = ("kmeans", "k-means++", "random")  # the method names of init_resp (gmmkernels/fit/_common.py)


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
    ``backend`` selects the kernel of the iteration (``mixture_em_stats``: E-step and sufficient statistics in one
    pass; "triton": its Triton kernel, diag and spherical, float32, with the device's native M-step) and of the
    initialisation (with "triton", a Triton E-step and the native statistics kernel).
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

    logits, means, scale = initial_params(fn, xc, shift, batch, K, cov_type, init, weights_init, means_init,
                                          precisions_init, generator, reg_covar, e_backend, s_backend)
    data = InMemory(xc, pass_backend(fn, backend, x.device, dt, cov_type, D))
    conv = Convergence(B, dt, x.device, tol)
    logits, means, scale = em_iterations(fn, data, logits, means, scale, cov_type, reg_covar, conv, max_iter)
    return em_result(logits, means, scale, shift, batch, cov_type, conv)


def initial_params(fn, xc, shift, batch, K, cov_type, init, weights_init, means_init, precisions_init, generator,
                   reg_covar, e_backend="auto", s_backend="auto"):
    """(logits [B, K], means [B, K, D], scale) to start EM from, in the centred coordinates of xc [B, N, D] (shifted
    by ``shift`` [B, 1, D]): from a GaussianMixture, or the M-step of initial responsibilities (``init``: a method
    name or a tensor [..., N, K]) with ``weights_init`` / ``means_init`` / ``precisions_init`` overriding it."""
    B, N, D = xc.shape
    dt = xc.dtype
    full = cov_type == "full"
    tail = (K, D, D) if full else (K, D) if cov_type == "diag" else (K,)
    if isinstance(init, GaussianMixture):
        if init.K != K or init.D != D or init.cov_type != cov_type:
            raise ValueError(f"{fn}: argument 'init' is a mixture with K={init.K}, D={init.D}, cov_type="
                             f"{init.cov_type!r}, but the fit has K={K}, D={D}, cov_type={cov_type!r}")
        V.tensors(fn, [("x", xc), ("init", init.means)], same_dtype=False)
        logits = init.logits.detach().to(dt).expand(*batch, K).reshape(B, K)
        means = init.means.detach().to(dt).expand(*batch, K, D).reshape(B, K, D) - shift
        scale = init.scale.detach().to(dt).expand(*batch, *tail).reshape(B, *tail)
        return logits, means, scale
    if isinstance(init, Tensor):
        if init.shape[-2:] != (N, K):
            raise ValueError(f"{fn}: initial responsibilities must be [..., N={N}, K={K}], got {tuple(init.shape)}")
    overridden = weights_init is not None and means_init is not None and precisions_init is not None
    if overridden and (isinstance(init, Tensor) or init in INIT_METHODS):
        # every parameter of the initial M-step is overridden: its responsibilities and statistics are not needed
        # (scikit-learn computes and discards them; the result is the same)
        logits, means, cov = None, None, None
    else:
        resp = (init.to(dt).expand(*batch, N, K).reshape(B, N, K) if isinstance(init, Tensor)
                else init_resp(xc, K, init, generator, fn, e_backend))
        nk, sx, sxx = mixture_suffstats(xc, resp, full, backend=s_backend)
        nk, means, cov = covariances(nk, sx, sxx, cov_type, reg_covar)
        logits = (nk / nk.sum(-1, keepdim=True)).log()
    if weights_init is not None:
        logits = weights_init.to(dt).expand(*batch, K).reshape(B, K).log()
    if means_init is not None:
        means = means_init.to(dt).expand(*batch, K, D).reshape(B, K, D) - shift
    if precisions_init is not None:
        scale = scale_from_precision(precisions_init.to(dt).expand(*batch, *tail).reshape(B, *tail), cov_type)
    else:
        scale = scale_from_cov(fn, cov, cov_type)
    return logits, means, scale


def em_iterations(fn, data, logits, means, scale, cov_type, reg_covar, conv, max_iter):
    """EM from (logits, means, scale) until every mixture has converged or ``max_iter``: per iteration one pass over
    ``data`` (gmmkernels/fit/_data.py) for the lower bound and the statistics, then the closed-form M-step (the
    native ``mixture_em_mstep``, which also gives the next pass its kernel parameters, or the host path). In-memory
    data on a native backend starts with the native loop ``mixture_em_iterate``. Converged mixtures keep their
    parameters (``conv``, gmmkernels/fit/_common.py). Returns the final parameters."""
    mstep = mstep_backend(data.backend, means.device, means.dtype, cov_type, means.shape[-1])
    kparams = None  # (prec, logc) of the current parameters, when the native M-step computed them
    start = 1
    if mstep is not None and mstep == data.backend and isinstance(data, InMemory) and not data.distributed:
        # the native loop runs the iterations until one needs Python: a mixture converged (the others go on here
        # with the converged ones kept) or an M-step the host path must redo
        kparams = kernel_params(logits, means, scale, cov_type)
        lg, mu, sc, kp, lower, converged, kept, why = em_iterate_kernel(
            data.xc, logits, means, scale, kparams, conv.lower, cov_type, reg_covar, conv.tol, max_iter, data.n)
        if kept:
            logits, means, scale, kparams = lg, mu, sc, kp
            if conv.record(kept, lower, converged):
                return logits, means, scale
        start = kept + 1
    for it in range(start, max_iter + 1):
        st = data.stats(logits, means, scale, cov_type, kparams)
        lb = st.lp / data.n
        lg_new, mu_new, sc_new, kp_new = m_step(fn, st, cov_type, reg_covar, mstep)
        if conv.any_converged:  # the kept parameters' kernel parameters are derived again in the next pass
            logits, means, scale = conv.keep(lg_new, logits), conv.keep(mu_new, means), conv.keep(sc_new, scale)
            kparams = None
        else:
            logits, means, scale, kparams = lg_new, mu_new, sc_new, kp_new
        if conv.update(it, lb):
            break
    return logits, means, scale


def m_step(fn, st, cov_type, reg_covar, mstep):
    """(logits, means, scale, kernel parameters or None) of the M-step from the statistics ``st``: the native
    ``mixture_em_mstep`` on backend ``mstep``, or the host path when ``mstep`` is None or when some component's
    covariance needs what only the host path does (the float32 projection onto the PSD cone, or the error that
    names the fix)."""
    if mstep is not None:
        p = em_mstep_kernel(st.nk, st.sx, st.sxx, cov_type, reg_covar, mstep)
        if bool(p.ok.all()):
            return p.logits, p.means, p.scale, (p.prec, p.logc)
    nk, mu, cov = covariances(st.nk, st.sx, st.sxx, cov_type, reg_covar)
    return (nk / nk.sum(-1, keepdim=True)).log(), mu, scale_from_cov(fn, cov, cov_type), None


def em_result(logits, means, scale, shift, batch, cov_type, conv) -> FitResult:
    """The FitResult of an EM fit, with the mixture moved back to the original coordinates."""
    K, D = means.shape[-2:]
    mix = GaussianMixture(logits.reshape(*batch, K), (means + shift).reshape(*batch, K, D),
                          scale.reshape(*batch, *scale.shape[1:]), cov_type)
    return FitResult(mix, conv.lower.reshape(batch), conv.n_iter.reshape(batch), conv.converged.reshape(batch), {})
