"""Public SMD ops: the fused low-rank-plus-diagonal hypernetwork adapter (algorithms.md section 2.5, K2).

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
autograd) | "cpu" | "cuda" | "triton" (env GMMKERNELS_BACKEND overrides "auto" when it names one of these).
"auto" picks the native kernel for the device, then Triton on CUDA, then "torch"; never "reference".
float16 / bfloat16 inputs are computed in float32 by the fused kernels and returned in the input dtype.
All backends are differentiable (first order) with respect to r, u and s.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _backend
from . import _registrations_smd  # noqa: F401  (fake kernels + autograd of the native op)
from . import smd_reference as _ref

ADAPTER_BACKENDS = ("auto", "reference", "torch", "cpu", "cuda", "triton")
# looked up once (the dispatcher query is not traceable by torch.compile; kernels register when _C is imported)
_NATIVE = {key: _backend.has_kernel("lowrank_adapter", key) for key in ("CPU", "CUDA")}


def available_adapter_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run :func:`lowrank_adapter` on ``device`` in this installation."""
    device = torch.device(device)
    out = ["reference", "torch"]
    if device.type == "cpu" and _NATIVE["CPU"]:
        out.append("cpu")
    if device.type == "cuda" and _NATIVE["CUDA"]:
        out.append("cuda")
    if _backend.triton_usable(device):
        out.append("triton")
    return out


def _check(fn: str, r, u, s) -> tuple[int, int]:
    for name, t in (("r", r), ("u", u), ("s", s)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: argument '{name}' must be a floating-point tensor, got {t.dtype}")
    for name, t in (("u", u), ("s", s)):
        if t.device != r.device:
            raise ValueError(f"{fn}: argument '{name}' is on {t.device} but 'r' is on {r.device}")
        if t.dtype != r.dtype:
            raise TypeError(f"{fn}: argument '{name}' has dtype {t.dtype} but 'r' has {r.dtype}; pass one dtype")
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


def _select(fn: str, backend: str, device: torch.device) -> str:
    if backend not in ADAPTER_BACKENDS:
        raise ValueError(f"{fn}: argument 'backend' must be one of {ADAPTER_BACKENDS}, got {backend!r}")
    if backend == "auto":
        env = os.environ.get("GMMKERNELS_BACKEND", "auto") or "auto"
        backend = env if env in ADAPTER_BACKENDS else "auto"
    if backend == "auto":
        if device.type == "cuda" and _NATIVE["CUDA"]:
            return "cuda"
        if device.type == "cuda" and _backend.HAS_TRITON:
            return "triton"
        if device.type == "cpu" and _NATIVE["CPU"]:
            return "cpu"
        return "torch"
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"{fn}: backend='cpu' needs CPU tensors, got {device}")
        if not _NATIVE["CPU"]:
            raise RuntimeError(f"{fn}: backend='cpu' needs the native extension, which is not built ({_backend.C_IMPORT_ERROR})")
    elif backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"{fn}: backend='cuda' needs CUDA tensors, got {device}")
        if not _NATIVE["CUDA"]:
            raise RuntimeError(f"{fn}: backend='cuda' needs the extension built with CUDA (see `gmmkernels info`)")
    elif backend == "triton":
        if not _backend.HAS_TRITON:
            raise RuntimeError(f"{fn}: backend='triton' needs the triton package")
        if not _backend.triton_usable(device):
            raise ValueError(f"{fn}: backend='triton' runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1)")
    return backend


def lowrank_adapter(r: Tensor, u: Tensor, s: Tensor, *, backend: str = "auto") -> Tensor:
    """r -> W_L ( ... (W_1 r)) with W_l = u_l u_l^T + softplus(s_l) I, never forming W_l.

    r [..., d], u [..., L, d] (u[..., l, :] = u_l, one rank-one factor per row and layer), s [L] raw scalars.
    Returns [..., d] in the dtype of r. Differentiable with respect to r, u and s.
    """
    fn = "lowrank_adapter"
    L, d = _check(fn, r, u, s)
    b = _select(fn, backend, r.device)
    if b == "reference":
        return _ref.lowrank_adapter_ref(r, u, s)
    if b == "torch":
        return _ref.lowrank_adapter_factored(r, u, s)
    lead = r.shape[:-1]
    out_dtype = r.dtype
    if out_dtype in (torch.float16, torch.bfloat16):  # kernels compute and store in float32
        r, u, s = r.float(), u.float(), s.float()
    if b == "triton" and r.dtype == torch.float64:
        raise TypeError(f"{fn}: backend='triton' computes in float32; use backend 'cpu'/'cuda'/'reference' for float64")
    P = math.prod(lead)
    r2 = r.reshape(P, d)
    u3 = u.reshape(P, L, d)
    if b == "triton":
        from .triton.lowrank_adapter import lowrank_adapter_triton

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
    if h.dim() < 2 or z.dim() != h.dim() or z.shape[0] != h.shape[0] or z.shape[2:] != h.shape[2:]:
        raise ValueError(f"{fn}: 'h' [B, C_h, ...] and 'z' [B, d_z, ...] must share batch and spatial sizes, got "
                         f"{tuple(h.shape)} and {tuple(z.shape)}")
    L, dz = p.shape[0], z.shape[1]
    if p.shape != (L, dz, dz) or q.shape != (L, dz) or s.shape != (L,):
        raise ValueError(f"{fn}: expected p [L, d_z, d_z], q [L, d_z], s [L] with d_z={dz}, got {tuple(p.shape)}, "
                         f"{tuple(q.shape)}, {tuple(s.shape)}")
    perm = (0, *range(2, h.dim()), 1)
    hp = h.permute(perm)
    zp = z.permute(perm)
    r = F.linear(hp, w_in, b_in)  # [B, *sp, d_z]
    u = F.linear(zp, p.reshape(L * dz, dz), q.reshape(L * dz)).unflatten(-1, (L, dz))  # [B, *sp, L, d_z]
    r = lowrank_adapter(r, u, s, backend=backend)
    inv = (0, h.dim() - 1, *range(1, h.dim() - 1))
    return h + F.linear(r, w_out, b_out).permute(inv)
