"""EM and VB on data that does not sit in one tensor.

* Chunks that arrive one at a time: a list, a ``DataLoader`` (over a ``TensorDataset``: the first entry of each
  batch is the data) or a callable returning a fresh iterator; each iteration reads every chunk once and keeps only
  the sufficient statistics (memory O(chunk + K D^2)).
* Data spread over the processes of a ``torch.distributed`` group (``distributed=True``; launch with ``torchrun``):
  each process passes its own chunks; the statistics are all-reduced once per iteration (one float64 buffer), so
  every process takes the same M-step and holds the same mixture.

Both give the fit of all the data taken together: the arithmetic of :func:`gmmkernels.fit_em` /
:func:`gmmkernels.fit_vb` (same centring, priors and M-steps) up to the order in which the sums are added. Before
iterating they make one pass for the mean (EM, VB) and, for VB without ``covariance_prior``, one for the data
covariance. Initial parameters: a :class:`~gmmkernels.GaussianMixture`, or ``init`` ('kmeans', 'k-means++',
'random') run on the first chunk of process 0 and broadcast (``weights_init`` / ``means_init`` /
``precisions_init`` override it as in fit_em); VB starts from the statistics of one pass under that mixture.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .. import _validate as V
from ..mixture import GaussianMixture
from ._common import COV_TYPES, Convergence, FitResult, check_vb_priors
from ._data import Chunked, ChunkSource, chunk_tensor, pass_backend
from .em import em_iterations, em_result, initial_params, step_backends
from .vb import build_vb_model, vb_iterations, vb_result


def _check(fn, K, cov_type, max_iter, tol, reg_covar, distributed):
    V.choice(fn, "cov_type", cov_type, COV_TYPES)
    V.integer(fn, "n_components", K, lo=1, what="a positive int")
    V.integer(fn, "max_iter", max_iter, lo=1)
    V.number(fn, "tol", tol, lo=0.0)
    V.number(fn, "reg_covar", reg_covar, lo=0.0)
    V.flag(fn, "distributed", distributed)
    if distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(f"{fn}: distributed=True needs torch.distributed initialised (launch with torchrun and call "
                             "torch.distributed.init_process_group)")


def _open(fn, chunks: ChunkSource, cov_type, backend, distributed, group):
    """The Chunked source (shift set to the mean of all the data) and the first chunk of this process."""
    it = chunks() if callable(chunks) else chunks
    try:
        first = chunk_tensor(fn, next(iter(it)))
    except StopIteration:
        raise ValueError(f"{fn}: argument 'chunks' yielded no chunk") from None
    dt = torch.float32 if first.dtype in (torch.float16, torch.bfloat16) else first.dtype
    batch, D = first.shape[:-2], first.shape[-1]
    if D == 0:
        raise ValueError(f"{fn}: argument 'chunks' has D=0 dimensions")
    src = Chunked(fn, chunks, batch, D, dt, first.device, pass_backend(fn, backend, first.device, dt, cov_type, D), group,
                  distributed)
    n, s1 = src.sum(lambda c: [torch.full((c.shape[0],), c.shape[1], dtype=torch.float64, device=c.device),
                               c.sum(1, dtype=torch.float64)])
    src.n = int(n[0].item())
    if src.n == 0:
        raise ValueError(f"{fn}: the chunks hold no points")
    src.shift = (s1 / n[:, None]).to(dt).unsqueeze(1)
    first = first.to(dt).reshape(-1, first.shape[-2], D) - src.shift
    return src, first


def _initial_mixture(fn, src, first, K, cov_type, init, weights_init, means_init, precisions_init, generator, reg_covar,
                     backend):
    """(logits, means, scale) in the centred coordinates: from a GaussianMixture, or from ``init`` on the first chunk
    of process 0, broadcast to every process."""
    batch = src.batch
    if isinstance(init, GaussianMixture):
        return initial_params(fn, first, src.shift, batch, K, cov_type, init, None, None, None, None, reg_covar)
    if not isinstance(init, str):
        raise ValueError(f"{fn}: argument 'init' must be 'kmeans', 'k-means++', 'random' or a GaussianMixture, got "
                         f"{type(init).__name__}")
    if first.shape[1] < K:
        raise ValueError(f"{fn}: n_components={K} exceeds the number of points of the first chunk ({first.shape[1]}), "
                         "where the initialisation runs")
    e_backend, s_backend = step_backends(fn, backend)
    params = initial_params(fn, first, src.shift, batch, K, cov_type, init, weights_init, means_init, precisions_init,
                            generator, reg_covar, e_backend, s_backend)
    if src.distributed:
        import torch.distributed as dist

        for t in params:
            dist.broadcast(t, src=dist.get_global_rank(src.group, 0) if src.group is not None else 0, group=src.group)
    return params


def fit_em_chunked(
    chunks: ChunkSource,
    n_components: int,
    cov_type: str = "diag",
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: Union[str, GaussianMixture] = "kmeans",
    weights_init: Optional[Tensor] = None,
    means_init: Optional[Tensor] = None,
    precisions_init: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    backend: str = "auto",
    distributed: bool = False,
    group=None,
) -> FitResult:
    """EM on data in chunks [..., n_i, D] (and, with ``distributed=True``, on every process of ``group``, default
    the world). Options and result as :func:`gmmkernels.fit_em` (see the module docstring for the initialisation)."""
    fn = "fit_em_chunked"
    K = n_components
    _check(fn, K, cov_type, max_iter, tol, reg_covar, distributed)
    src, first = _open(fn, chunks, cov_type, backend, distributed, group)
    logits, means, scale = _initial_mixture(fn, src, first, K, cov_type, init, weights_init, means_init,
                                            precisions_init, generator, reg_covar, backend)
    conv = Convergence(first.shape[0], src.dtype, src.device, tol)
    logits, means, scale = em_iterations(fn, src, logits, means, scale, cov_type, reg_covar, conv, max_iter)
    return em_result(logits, means, scale, src.shift, src.batch, cov_type, conv)


def fit_vb_chunked(
    chunks: ChunkSource,
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
    init: Union[str, GaussianMixture] = "kmeans",
    generator: Optional[torch.Generator] = None,
    backend: str = "auto",
    distributed: bool = False,
    group=None,
) -> FitResult:
    """Variational Bayes on data in chunks (and over processes), with the priors and result of
    :func:`gmmkernels.fit_vb`; it starts from the statistics of one pass under the initial mixture (see the module
    docstring)."""
    fn = "fit_vb_chunked"
    K = n_components
    _check(fn, K, cov_type, max_iter, tol, reg_covar, distributed)
    V.choice(fn, "weight_concentration_prior_type", weight_concentration_prior_type,
             ("dirichlet_process", "dirichlet_distribution"))
    src, first = _open(fn, chunks, cov_type, backend, distributed, group)
    batch, D, dt, dev = src.batch, src.D, src.dtype, src.device
    B = first.shape[0]
    check_vb_priors(fn, first.reshape(*batch, -1, D), cov_type, weight_concentration_prior_type,
                    weight_concentration_prior, mean_precision_prior, mean_prior, degrees_of_freedom_prior,
                    covariance_prior)
    full = cov_type == "full"

    def second_moment():  # one more pass over the chunks
        (s2,) = src.sum(lambda c: [c.transpose(1, 2) @ c if full else (c * c).sum(1)])
        return s2, src.n

    model = build_vb_model(cov_type, K, D, batch, src.shift, reg_covar, second_moment,
                           weight_concentration_prior_type=weight_concentration_prior_type,
                           weight_concentration_prior=weight_concentration_prior,
                           mean_precision_prior=mean_precision_prior, mean_prior=mean_prior,
                           degrees_of_freedom_prior=degrees_of_freedom_prior, covariance_prior=covariance_prior)
    logits, means, scale = _initial_mixture(fn, src, first, K, cov_type, init, None, None, None, generator, reg_covar,
                                            backend)
    st = src.stats(logits, means, scale, cov_type)
    state = model.m_step(st.nk, st.sx, st.sxx)
    conv = Convergence(B, dt, dev, tol)
    state = vb_iterations(fn, src, model, state, conv, max_iter)
    return vb_result(fn, model, state, src.shift, batch, conv)


__all__ = ["fit_em_chunked", "fit_vb_chunked"]
