"""Pure-PyTorch references of the SMD (Soft Mixture Denoising, arXiv 2309.14068) hypernetwork adapter.

The adapter of the official code (``vanderschaarlab/smd``, ``src/smd/nn.py::HyperNet``; see
docs/kernels.md (lowrank_adapter)) acts on every pixel p of a feature map h [B, C_h, H, W] with the pixel's latent z [B, d_z, H, W]:

    u_l = P_l z + q_l                       l = 1..L   (nn.Linear(d_z, d_z) per layer)
    W_l = u_l u_l^T + softplus(s_l) I       s_l: one learned scalar per layer
    r   = W_in h + b_in                     (nn.Linear(C_h, d_z))
    r   = W_L ( ... (W_1 r))                applied in list order, l = 1 first
    h'  = h + W_out r + b_out               (nn.Linear(d_z, C_h), residual)

The official code materialises every W_l as a [B, H, W, d_z, d_z] tensor. The fused op only needs
W_l r = u_l (u_l . r) + softplus(s_l) r. The functions here are the specification and the test oracle:

* :func:`lowrank_adapter_ref`: the chain r -> W_L(...(W_1 r)) with every W_l materialised (the official form).
* :func:`lowrank_adapter_factored`: the same chain in rank-one form with plain torch ops (what the fused kernels
  compute; used as the ``"torch"`` backend, differentiable through autograd).
* :func:`lowrank_adapter_backward_ref`: the VJP of the chain (what the backward kernels compute), differentiable.
* :func:`hypernet_adapter_ref`: the whole adapter h -> h' on channel-first maps, materialising W_l.

Shapes of the chain: r [..., d], u [..., L, d] (u[..., l, :] = u_l), s [L] raw scalars. softplus is
``torch.nn.functional.softplus`` (beta 1, threshold 20).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def lowrank_adapter_ref(r: Tensor, u: Tensor, s: Tensor) -> Tensor:
    """W_L ( ... (W_1 r)) with W_l = u_l u_l^T + softplus(s_l) I built explicitly ([..., d, d] per layer)."""
    d = r.shape[-1]
    eye = torch.eye(d, dtype=r.dtype, device=r.device)
    c = F.softplus(s)
    x = r
    for l in range(u.shape[-2]):
        ul = u[..., l, :]
        W = ul.unsqueeze(-1) * ul.unsqueeze(-2) + c[l] * eye  # [..., d, d]
        x = (W @ x.unsqueeze(-1)).squeeze(-1)
    return x


def lowrank_adapter_factored(r: Tensor, u: Tensor, s: Tensor) -> Tensor:
    """The same chain as :func:`lowrank_adapter_ref` in O(L d) per row: r <- u_l (u_l . r) + softplus(s_l) r."""
    c = F.softplus(s)
    x = r
    for l in range(u.shape[-2]):
        ul = u[..., l, :]
        x = ul * (ul * x).sum(-1, keepdim=True) + c[l] * x
    return x


def lowrank_adapter_backward_ref(grad_out: Tensor, r: Tensor, u: Tensor, s: Tensor):
    """(grad_r, grad_u, grad_s) of sum(grad_out * lowrank_adapter_factored(r, u, s)): the reference of the backward
    kernels (``torch.ops.gmmkernels.lowrank_adapter_backward`` and ``lowrank_adapter_triton_backward``). Its own
    derivatives (it is built with torch.func.vjp, which stays differentiable) are the adapter's second derivatives."""
    _, pullback = torch.func.vjp(lowrank_adapter_factored, r, u, s)
    return pullback(grad_out)


def hypernet_adapter_ref(h: Tensor, z: Tensor, w_in: Tensor, b_in: Tensor, p: Tensor, q: Tensor, s: Tensor,
                         w_out: Tensor, b_out: Tensor) -> Tensor:
    """The official adapter h' = h + W_out (W_L ... W_1 (W_in h + b_in)) + b_out, materialising every W_l.

    h [B, C_h, H, W], z [B, d_z, H, W], w_in [d_z, C_h], b_in [d_z], p [L, d_z, d_z] (P_l, nn.Linear weight layout:
    u_l = z P_l^T + q_l), q [L, d_z], s [L], w_out [C_h, d_z], b_out [C_h]. Returns [B, C_h, H, W].
    """
    hp = h.permute(0, 2, 3, 1)  # [B, H, W, C_h]
    zp = z.permute(0, 2, 3, 1)  # [B, H, W, d_z]
    r = F.linear(hp, w_in, b_in)
    u = torch.stack([F.linear(zp, p[l], q[l]) for l in range(p.shape[0])], dim=-2)  # [B, H, W, L, d_z]
    r = lowrank_adapter_ref(r, u, s)
    return h + F.linear(r, w_out, b_out).permute(0, 3, 1, 2)
