"""Autograd helpers shared by the ops' registrations: the derivatives of a backward op, and torch.func transforms.

The fused kernels compute first derivatives. Their backward ops (``mixture_stats_backward``,
``lowrank_adapter_backward`` and the Triton ones) are differentiated in turn through a reference of the backward op
written with differentiable torch ops (``gmmkernels/reference``): :func:`vjp` evaluates its vector-Jacobian product
with ``torch.func.vjp``, whose result stays differentiable when autograd records it (``create_graph=True``), so every
higher order is available too. Those orders materialise what the reference materialises (N x K x D for the mixture
ops).

``torch.library.register_autograd`` registrations do not support torch.func transforms (grad, vjp, jacrev, jacfwd,
hessian, vmap). :func:`transforms_active` lets an op send such calls to a pure-PyTorch backend instead.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor


def transforms_active() -> bool:
    """True while a torch.func transform (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap) runs the caller."""
    return bool(torch._C._are_functorch_transforms_active())


def vjp(fn: Callable, primals: Sequence[Optional[Tensor]], cotangents: Sequence[Optional[Tensor]]) -> list:
    """Vector-Jacobian product of ``fn(*primals)`` (a tuple of tensors) with ``cotangents`` (``None``: zero).

    ``None`` primals are passed through as ``None`` and get ``None`` gradients. The result is differentiable with
    respect to the primals and the cotangents when autograd records the call."""
    idx = [i for i, p in enumerate(primals) if p is not None]

    def f(*ts):
        args = list(primals)
        for i, t in zip(idx, ts):
            args[i] = t
        return tuple(fn(*args))

    outs, pullback = torch.func.vjp(f, *(primals[i] for i in idx))
    cots = tuple(torch.zeros_like(o) if c is None else c.to(o.dtype) for o, c in zip(outs, cotangents))
    grads = pullback(cots)
    out: list = [None] * len(primals)
    for i, g in zip(idx, grads):
        out[i] = g
    return out

