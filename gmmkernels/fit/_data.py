"""Where an EM / VB iteration reads its data, and the one pass it makes over it.

* :class:`InMemory`: the (centred) data as one tensor [B, N, D]; one fused ``mixture_em_stats`` call per iteration.
* :class:`Chunked`: data that arrives in chunks (a list, a DataLoader or any iterable that can be iterated once per
  iteration, or a callable returning a fresh iterator); one call per chunk, nothing kept but the sums of the
  sufficient statistics.
* Either one can sum its statistics over the processes of a ``torch.distributed`` group (one all-reduce per
  iteration): every process then takes the same M-step, so the fit equals the single-process fit on all the data.

``stats(logits, means, scale, cov_type, kparams=None)`` returns :class:`Stats` (sums over every point, per mixture);
the parameters are in the centred coordinates of the data (the source subtracts ``shift`` from each chunk), and
``kparams`` = (prec, logc) are their kernel parameters when the native M-step computed them (else they are derived
here). :func:`mstep_backend` says which M-step an EM fit takes.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from .. import _dispatch
from ..ops.mixture_em_stats import em_stats_kernel
from ..ops.mixture_stats import _kernel_params, mixture_stats
from ..ops.mixture_suffstats import mixture_suffstats


class Stats(NamedTuple):
    """Sums over the data of one pass, per mixture: sum log p [B], sum r log r [B], N_k [B, K], sum r x [B, K, D],
    sum r x^2 [B, K, D] or sum r x x^T [B, K, D, D]."""

    lp: Tensor
    rl: Tensor
    nk: Tensor
    sx: Tensor
    sxx: Tensor


def pass_backend(fn: str, backend: str, device: torch.device, dtype: torch.dtype, cov_type: str, D: int) -> str:
    """The backend of the pass: a backend of ``mixture_em_stats`` (``backend="triton"``: its Triton kernel, diag and
    spherical float32, or the error that names what it lacks), or "two-step:<E-step backend>" for what the fused CUDA
    kernel does not cover, dimensions past its limit; the statistics then come from the native ``mixture_suffstats``."""
    if device.type == "cuda" and backend in ("auto", "cuda") and D > _dispatch.EM_STATS_CUDA_MAX_D[cov_type]:
        return f"two-step:{backend}"
    return _dispatch.select(fn, "mixture_em_stats", backend, device, dtype, cov_type=cov_type, D=D)


def mstep_backend(pass_b: str, device: torch.device, dtype: torch.dtype, cov_type: str, D: int) -> Optional[str]:
    """The native M-step (``mixture_em_mstep``) of an EM fit whose pass runs on ``pass_b``: the device's native
    kernel where it can run, or None (the host path of torch ops; always for ``backend="reference"``)."""
    if pass_b == "reference" or not _dispatch.can_run("mixture_em_stats", device.type, device, dtype,
                                                      op="mixture_em_mstep", cov_type=cov_type, D=D):
        return None
    return device.type


def kernel_params(logits: Tensor, means: Tensor, scale: Tensor, cov_type: str):
    """(prec [B, K, D] or [B, K, D, D], logc [B, K]) of the mixtures (logits [B, K], means [B, K, D], scale) for the
    native pass (spherical precisions expanded to D)."""
    B, K, D = means.shape
    prec, logc = _kernel_params(logits, scale, cov_type, K, D)
    return (prec.expand(B, K, D).contiguous() if cov_type == "spherical" else prec), logc


def one_pass(x3: Tensor, logits: Tensor, means: Tensor, scale: Tensor, cov_type: str, backend: str,
             kparams=None) -> Stats:
    """The statistics of x3 [B or 1, n, D] (centred) under the mixtures (logits [B, K], means [B, K, D], scale).
    ``kparams``: the kernel parameters (prec, logc) of these mixtures when the M-step computed them already."""
    K, D = means.shape[-2:]
    full = cov_type == "full"
    if backend.startswith("two-step:"):
        st = mixture_stats(x3, logits, means, scale, cov_type, with_score=False, with_resp=True,
                           backend=backend.split(":")[1])
        r = st.responsibilities
        rl = torch.where(r == 0, torch.zeros_like(r), r * torch.log(r)).sum((-1, -2))
        nk, sx, sxx = mixture_suffstats(x3, r, full)
        return Stats(st.log_prob.sum(-1), rl, nk, sx, sxx)
    prec, logc = kparams if kparams is not None else kernel_params(logits, means, scale, cov_type)
    lp, rl, nk, sx, sxx, _ = em_stats_kernel(x3, means, prec, logc, full, False, backend)
    return Stats(lp, rl, nk, sx, sxx)


def all_reduce(ts, group) -> list:
    """Sums of the tensors ``ts`` over the processes of ``group`` (one all-reduce of one flat float64 buffer)."""
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in ts])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    out, i = [], 0
    for t in ts:
        out.append(flat[i:i + t.numel()].reshape(t.shape).to(t.dtype))
        i += t.numel()
    return out


class InMemory:
    """Centred data xc [B, N, D] held in memory (``group``: this process's shard of a distributed data set)."""

    def __init__(self, xc: Tensor, backend: str, group=None, distributed: bool = False):
        self.xc, self.backend, self.group, self.distributed = xc, backend, group, distributed
        n = torch.tensor([xc.shape[-2]], dtype=torch.float64, device=xc.device)
        if distributed:
            import torch.distributed as dist

            dist.all_reduce(n, group=group)
        self.n = int(n.item())

    def stats(self, logits, means, scale, cov_type, kparams=None) -> Stats:
        st = one_pass(self.xc, logits, means, scale, cov_type, self.backend, kparams)
        return Stats(*all_reduce(st, self.group)) if self.distributed else st


ChunkSource = Union[Iterable, Callable[[], Iterable]]


def chunk_tensor(fn: str, item) -> Tensor:
    """The data tensor of one item of a chunk source: a tensor, or the first entry of a (tensor, ...) tuple / list as
    a DataLoader over a TensorDataset yields it."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if not isinstance(item, Tensor) or not item.is_floating_point():
        raise TypeError(f"{fn}: argument 'chunks' must yield floating-point tensors [..., n, D] (or tuples whose first "
                        f"entry is one), got {type(item).__name__}"
                        + (f" of dtype {item.dtype}" if isinstance(item, Tensor) else ""))
    if item.dim() < 2:
        raise ValueError(f"{fn}: argument 'chunks' must yield floating-point tensors [..., n, D] (or tuples whose first "
                         f"entry is one), got {type(item).__name__}"
                         + (f" of shape {tuple(item.shape)}" if isinstance(item, Tensor) else ""))
    return item


class Chunked:
    """Data that arrives in chunks [..., n_i, D] (the same leading dimensions and D in every chunk), re-read once per
    pass. ``chunks(shift)`` yields them centred; statistics are summed over the chunks in float64 and, when
    ``distributed``, over the processes of ``group``."""

    def __init__(self, fn: str, source: ChunkSource, batch, D: int, dtype, device, backend: str, group=None,
                 distributed: bool = False):
        if not callable(source) and iter(source) is source:
            raise ValueError(f"{fn}: argument 'chunks' is an iterator, which can be read only once; pass a list, a "
                             "DataLoader or a callable returning a fresh iterator (one pass per iteration)")
        self.fn, self.source, self.batch, self.D = fn, source, torch.Size(batch), D
        self.dtype, self.device, self.backend = dtype, device, backend
        self.group, self.distributed = group, distributed
        self.shift = torch.zeros(math.prod(self.batch), 1, D, dtype=dtype, device=device)
        self.n: Optional[int] = None  # points per data set over every chunk and process (set by the first pass)

    def chunks(self):
        """The chunks of one pass as [B, n_i, D] tensors of the fit's dtype and device, minus ``self.shift``."""
        B = math.prod(self.batch)
        for item in (self.source() if callable(self.source) else self.source):
            c = chunk_tensor(self.fn, item)
            if c.shape[:-2] != self.batch or c.shape[-1] != self.D:
                raise ValueError(f"{self.fn}: every chunk must have shape [{', '.join(map(str, self.batch))}"
                                 f"{', ' if self.batch else ''}n, D={self.D}], got {tuple(c.shape)}")
            yield c.to(device=self.device, dtype=self.dtype).reshape(B, c.shape[-2], self.D) - self.shift

    def sum(self, terms: Callable[[Tensor], list]) -> list:
        """sum over the chunks (and processes) of ``terms(chunk)``, a list of tensors, in float64."""
        tot = None
        for c in self.chunks():
            t = [v.to(torch.float64) for v in terms(c)]
            tot = t if tot is None else [a + b for a, b in zip(tot, t)]
        if tot is None:  # no chunk on this process: the shapes from an empty one
            tot = [v.to(torch.float64) for v in terms(self.shift[:, :0])]
        if self.distributed:
            tot = all_reduce(tot, self.group)
        return tot

    def stats(self, logits, means, scale, cov_type, kparams=None) -> Stats:
        tot = self.sum(lambda c: list(one_pass(c, logits, means, scale, cov_type, self.backend, kparams)))
        return Stats(*(t.to(self.dtype) for t in tot))
