"""Public SMD ops: the fused low-rank-plus-diagonal hypernetwork adapter (docs/kernels.md (lowrank_adapter)).

    lowrank_adapter(r, u, s)   r [..., d], u [..., L, d], s [L]  ->  [..., d]
        out = W_L ( ... (W_1 r)),   W_l r = u_l (u_l . r) + softplus(s_l) r,   u_l = u[..., l, :]

    hypernet_adapter(h, z, w_in, b_in, p, q, s, w_out, b_out)  ->  h + W_out (W_L ... W_1 (W_in h + b_in)) + b_out
        the whole SMD adapter on channel-first maps h [B, C_h, H, W], z [B, d_z, H, W]; the three linear maps are
        GEMMs (the L per-layer maps u_l = P_l z + q_l are one GEMM [P, d_z] x [d_z, L d_z]), the chain is the fused op.

Interface choice: the op takes u (the output of the per-layer GEMMs) rather than z and the P_l. The GEMMs are best
left to cuBLAS / MKL; fusing them into the elementwise kernel would not remove any O(P d_z^2) tensor (there is
none left once W_l is never formed) and u [P, L, d_z] is the same order of size as the surrounding activations.
The op saves only its inputs r and u for the backward (O(P d_z (L + 1))); the backward kernel replays the
forward per pixel. The materialised form of the official code keeps L tensors of P d_z^2 entries instead.

backend: "auto" | "reference" (materialised W_l, the official form) | "torch" (rank-one form in plain torch ops,
autograd) | "cpu" | "cuda" | "triton" (gmmkernels/_dispatch.py gives the rule of "auto" and GMMKERNELS_BACKEND).
"auto" picks the native kernel for the device, then Triton on CUDA, then "torch"; never "reference".
float16 / bfloat16 inputs are computed in float32 on every backend and returned in the input dtype.
All backends are differentiable with respect to r, u and s, to any order: the fused backward kernels give the first
derivatives, the differentiable reference of the backward (:func:`gmmkernels.reference.lowrank_adapter_backward_ref`)
the higher ones. Under torch.func transforms (grad, jacrev, jacfwd, hessian, vmap) ``backend="auto"`` runs "torch";
naming a fused backend there raises.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _autograd, _backend, _dispatch
from .. import _validate as V
from ..reference import lowrank_adapter as _ref

ADAPTER_BACKENDS = ("auto",) + _dispatch.FAMILIES["lowrank_adapter"].names


def available_adapter_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run :func:`lowrank_adapter` on ``device`` in this installation."""
    return _dispatch.available("lowrank_adapter", device)


def _check(fn: str, r, u, s) -> tuple[int, int]:
    V.tensors(fn, [("r", r), ("u", u), ("s", s)])
    if r.dim() < 1:
        raise ValueError(f"{fn}: argument 'r' must have shape [..., d], got {tuple(r.shape)}")
    d = r.shape[-1]
    if u.dim() != r.dim() + 1 or tuple(u.shape[:-2]) != tuple(r.shape[:-1]) or u.shape[-1] != d:
        raise ValueError(
            f"{fn}: argument 'u' must have shape [..., L, d] = [{', '.join(map(str, r.shape[:-1]))}{', ' if r.dim() > 1 else ''}L, {d}]"
            f" to match 'r' {tuple(r.shape)}, got {tuple(u.shape)}")
    L = u.shape[-2]
    if s.dim() != 1 or s.shape[0] != L:
        raise ValueError(f"{fn}: argument 's' must have shape [L={L}], got {tuple(s.shape)}")
    return L, d


def _check_hypernet(fn: str, h, z, w_in, b_in, p, q, s, w_out, b_out) -> tuple[int, int]:
    """Checks of :func:`hypernet_adapter`'s arguments; returns (L, d_z)."""
    V.tensors(fn, [("h", h), ("z", z), ("w_in", w_in), ("b_in", b_in), ("p", p), ("q", q), ("s", s), ("w_out", w_out),
                   ("b_out", b_out)])
    if h.dim() < 2:
        raise ValueError(f"{fn}: argument 'h' must have shape [B, C_h, *spatial], got {list(h.shape)}")
    if z.dim() != h.dim() or z.shape[0] != h.shape[0] or z.shape[2:] != h.shape[2:]:
        want = f"[{h.shape[0]}, d_z{''.join(f', {n}' for n in h.shape[2:])}]"
        raise ValueError(f"{fn}: argument 'z' must have shape [B, d_z, *spatial] = {want} to match 'h' "
                         f"{list(h.shape)}, got {list(z.shape)}")
    Ch, dz = h.shape[1], z.shape[1]
    if p.dim() != 3:
        raise ValueError(f"{fn}: argument 'p' must have shape [L, d_z, d_z] = [L, {dz}, {dz}], got {list(p.shape)}")
    L = p.shape[0]
    for name, t, want, layout in (("p", p, (L, dz, dz), "[L, d_z, d_z]"), ("q", q, (L, dz), "[L, d_z]"),
                                  ("s", s, (L,), "[L]"), ("w_in", w_in, (dz, Ch), "[d_z, C_h]"),
                                  ("b_in", b_in, (dz,), "[d_z]"), ("w_out", w_out, (Ch, dz), "[C_h, d_z]"),
                                  ("b_out", b_out, (Ch,), "[C_h]")):
        V.shape(fn, name, t, want, layout)
    return L, dz


def lowrank_adapter(r: Tensor, u: Tensor, s: Tensor, *, backend: str = "auto") -> Tensor:
    """r -> W_L ( ... (W_1 r)) with W_l = u_l u_l^T + softplus(s_l) I, never forming W_l.

    r [..., d], u [..., L, d] (u[..., l, :] = u_l, one rank-one factor per row and layer), s [L] raw scalars.
    Returns [..., d] in the dtype of r. Differentiable with respect to r, u and s.
    """
    fn = "lowrank_adapter"
    L, d = _check(fn, r, u, s)
    out_dtype = r.dtype
    cdt = _dispatch.compute_dtype(out_dtype)
    b = _dispatch.select(fn, "lowrank_adapter", backend, r.device, cdt, transforms=_autograd.transforms_active())
    if cdt != out_dtype:  # half inputs: every backend computes in float32
        r, u, s = r.to(cdt), u.to(cdt), s.to(cdt)
    if b == "reference":
        return _ref.lowrank_adapter_ref(r, u, s).to(out_dtype)
    if b == "torch":
        return _ref.lowrank_adapter_factored(r, u, s).to(out_dtype)
    lead = r.shape[:-1]
    P = math.prod(lead)
    r2 = r.reshape(P, d)
    u3 = u.reshape(P, L, d)
    if b == "triton":
        from ..triton.lowrank_adapter import lowrank_adapter_triton

        out = lowrank_adapter_triton(r2, u3, s)
    else:
        out = torch.ops.gmmkernels.lowrank_adapter(r2, u3, s)
    return out.reshape(*lead, d).to(out_dtype)


def hypernet_adapter(h: Tensor, z: Tensor, w_in: Tensor, b_in: Tensor, p: Tensor, q: Tensor, s: Tensor, w_out: Tensor,
                     b_out: Tensor, *, backend: str = "auto") -> Tensor:
    """The SMD adapter h + W_out (W_L ... W_1 (W_in h + b_in)) + b_out with u_l = P_l z + q_l per pixel.

    h [B, C_h, *spatial] and z [B, d_z, *spatial] channel-first (any number of spatial dims, including none);
    w_in [d_z, C_h], b_in [d_z], p [L, d_z, d_z] (nn.Linear weight layout), q [L, d_z], s [L], w_out [C_h, d_z],
    b_out [C_h]. The per-layer maps run as one GEMM; the chain is :func:`lowrank_adapter`.
    """
    fn = "hypernet_adapter"
    L, dz = _check_hypernet(fn, h, z, w_in, b_in, p, q, s, w_out, b_out)
    V.choice(fn, "backend", backend, ADAPTER_BACKENDS)
    perm = (0, *range(2, h.dim()), 1)
    hp = h.permute(perm)
    zp = z.permute(perm)
    r = F.linear(hp, w_in, b_in)  # [B, *sp, d_z]
    u = F.linear(zp, p.reshape(L * dz, dz), q.reshape(L * dz)).unflatten(-1, (L, dz))  # [B, *sp, L, d_z]
    r = lowrank_adapter(r, u, s, backend=backend)
    inv = (0, h.dim() - 1, *range(1, h.dim() - 1))
    return h + F.linear(r, w_out, b_out).permute(inv)


# ----------------------------------------------------------------------------------------------------------
# fake kernels and autograd of the native op


if _backend.has_schema("lowrank_adapter"):

    @torch.library.register_fake("gmmkernels::lowrank_adapter")
    def _lowrank_adapter_fake(r, u, s):
        torch._check(r.dim() == 2, lambda: "lowrank_adapter: r must be [P, d]")
        torch._check(u.dim() == 3, lambda: "lowrank_adapter: u must be [P, L, d]")
        torch._check(s.dim() == 1, lambda: "lowrank_adapter: s must be [L]")
        return r.new_empty(r.shape)

    @torch.library.register_fake("gmmkernels::lowrank_adapter_backward")
    def _lowrank_adapter_backward_fake(grad_out, r, u, s):
        return r.new_empty(r.shape), u.new_empty(u.shape), s.new_empty(s.shape)  # contiguous, as the kernels

    def _setup(ctx, inputs, output):
        r, u, s = inputs
        ctx.save_for_backward(r, u, s)

    def _backward(ctx, grad_out):
        r, u, s = ctx.saved_tensors
        gr, gu, gs = torch.ops.gmmkernels.lowrank_adapter_backward(grad_out.contiguous(), r, u, s)
        return gr, gu, gs

    torch.library.register_autograd("gmmkernels::lowrank_adapter", _backward, setup_context=_setup)

    def _setup_bwd(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _backward_bwd(ctx, ggr, ggu, ggs):
        """Second and higher derivatives: the VJP of the differentiable reference of this backward."""
        return tuple(_autograd.vjp(_ref.lowrank_adapter_backward_ref, ctx.saved_tensors, (ggr, ggu, ggs)))

    torch.library.register_autograd("gmmkernels::lowrank_adapter_backward", _backward_bwd, setup_context=_setup_bwd)
