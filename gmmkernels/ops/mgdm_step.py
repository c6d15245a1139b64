"""Public ops of MGDM (mixture-guided diffusion for inverse problems): the fused Gauss_VI step and the bridge draw.

    mgdm_vi_step(state, grad_v, eps, m, inv_sigma2, *, lr, beta1=0.9, beta2=0.999, adam_eps=1e-8, step, seed, draw,
                 backend="auto") -> (v_next, eps_next)
    mgdm_bridge(u, w, cu, cw, std, *, seed, draw, backend="auto") -> cu * u + cw * w + std * z

Gauss_VI step (docs/kernels.md (mgdm_step)): the variational family N(mu, diag(exp(2 rho))) of x_s given (x_0, x_t)
with prior N(m, sigma^2 I); v = mu + exp(rho) eps is the current sample and gamma = grad_v the caller's gradient of
-log potential at v (a vector-Jacobian product through the denoiser). One call computes
g_mu = gamma + (v - m) / sigma^2, g_rho = g_mu exp(rho) eps - 1, one Adam step (torch.optim.Adam arithmetic, bias
corrected, step counted from 1) on (mu, rho), and the next sample v' = mu' + exp(rho') eps' with fresh normals eps'.

  state       [6, B, P] = (mu, rho, Adam m_mu, m_rho, v_mu, v_rho), updated in place
  grad_v, eps, m  [B, P];   inv_sigma2 [B] = 1 / sigma^2 per batch row

The normals are counter-based (seed, flat element index, draw, tag 5 for the VI step, tag 4 for the bridge), so the
same (seed, draw) gives the same draws on every backend (the reference evaluates the same Philox stream in float64).

backend: "auto" | "reference" | "cpu" | "cuda" (gmmkernels/_dispatch.py gives the rule of "auto").
Dtypes: float32 and float64 (float16 / bfloat16 are computed in float32). Not differentiable: MGDM calls them
under no_grad; the gradient of the potential comes from the caller's VJP.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .. import _backend, _dispatch
from .. import _validate as V
from ..reference import mgdm_step as _ref

BACKENDS = ("auto",) + _dispatch.FAMILIES["mgdm_step"].names
_HALF = (torch.float16, torch.bfloat16)


def _seed(fn: str, seed) -> int:
    seed = V.integer(fn, "seed", seed, lo=-(1 << 63), hi=(1 << 64) - 1)
    return ((seed + (1 << 63)) % (1 << 64)) - (1 << 63)  # the same 64 bits as a signed int64


def mgdm_vi_step(state: Tensor, grad_v: Tensor, eps: Tensor, m: Tensor, inv_sigma2: Tensor, *, lr: float,
                 beta1: float = 0.9, beta2: float = 0.999, adam_eps: float = 1e-8, step: int, seed: int, draw: int,
                 backend: str = "auto") -> Tuple[Tensor, Tensor]:
    """One fused Gauss_VI step; updates ``state`` in place and returns (v_next [B, P], eps_next [B, P])."""
    fn = "mgdm_vi_step"
    V.tensors(fn, [("state", state), ("grad_v", grad_v), ("eps", eps), ("m", m), ("inv_sigma2", inv_sigma2)])
    if state.dim() != 3 or state.shape[0] != 6:
        raise ValueError(f"{fn}: argument 'state' must have shape [6, B, P] (mu, rho, m_mu, m_rho, v_mu, v_rho), "
                         f"got {list(state.shape)}")
    B, P = state.shape[1], state.shape[2]
    for name, t in (("grad_v", grad_v), ("eps", eps), ("m", m)):
        V.shape(fn, name, t, (B, P), "[B, P]")
    V.shape(fn, "inv_sigma2", inv_sigma2, (B,), "[B]")
    V.positive(fn, "inv_sigma2", inv_sigma2)
    if not state.is_contiguous():
        raise ValueError(f"{fn}: argument 'state' must be contiguous (it is updated in place)")
    lr = V.number(fn, "lr", lr, lo=0.0, lo_open=True)
    beta1 = V.number(fn, "beta1", beta1, lo=0.0, hi=1.0, hi_open=True)
    beta2 = V.number(fn, "beta2", beta2, lo=0.0, hi=1.0, hi_open=True)
    adam_eps = V.number(fn, "adam_eps", adam_eps, lo=0.0, lo_open=True)
    step = V.integer(fn, "step", step, lo=1)
    seed = _seed(fn, seed)
    draw = V.integer(fn, "draw", draw, lo=0, hi=(1 << 32) - 1)
    cdt = torch.float32 if state.dtype in _HALF else state.dtype
    b = _dispatch.select(fn, "mgdm_step", backend, state.device, cdt, op="mgdm_vi_step")
    if cdt != state.dtype:  # compute in float32, write the state back in its own dtype
        work = state.float()
        v, e = mgdm_vi_step(work, grad_v.float(), eps.float(), m.float(), inv_sigma2.float(), lr=lr, beta1=beta1,
                            beta2=beta2, adam_eps=adam_eps, step=step, seed=seed, draw=draw, backend=b)
        state.copy_(work)
        return v.to(state.dtype), e.to(state.dtype)
    if b == "reference":
        eps_next = _ref.stream_normals(grad_v, seed, draw, _ref.TAG_VI)
        new, v, e = _ref.mgdm_vi_step_ref(state, grad_v, eps, m, inv_sigma2, lr, beta1, beta2, adam_eps, step, eps_next)
        state.copy_(new)
        return v, e
    return torch.ops.gmmkernels.mgdm_vi_step(state, grad_v.contiguous(), eps.contiguous(), m.contiguous(),
                                             inv_sigma2.contiguous(), lr, beta1, beta2, adam_eps, step, seed, draw)


def mgdm_bridge(u: Tensor, w: Tensor, cu: float, cw: float, std: float, *, seed: int, draw: int,
                backend: str = "auto") -> Tensor:
    """The bridge draw cu * u + cw * w + std * z, z ~ N(0, I) from the counter-based stream (seed, element, draw)."""
    fn = "mgdm_bridge"
    V.tensors(fn, [("u", u), ("w", w)])
    if u.shape != w.shape:
        raise ValueError(f"{fn}: argument 'w' must have the shape of 'u' {list(u.shape)}, got {list(w.shape)}")
    cu = V.number(fn, "cu", cu)
    cw = V.number(fn, "cw", cw)
    std = V.number(fn, "std", std, lo=0.0)
    seed = _seed(fn, seed)
    draw = V.integer(fn, "draw", draw, lo=0, hi=(1 << 32) - 1)
    dtype = u.dtype
    cdt = torch.float32 if dtype in _HALF else dtype
    b = _dispatch.select(fn, "mgdm_step", backend, u.device, cdt, op="mgdm_bridge")
    u, w = u.to(cdt), w.to(cdt)
    if b == "reference":
        z = _ref.stream_normals(u, seed, draw, _ref.TAG_BRIDGE) if std != 0 else torch.zeros_like(u)
        return _ref.mgdm_bridge_ref(u, w, cu, cw, std, z).to(dtype)
    return torch.ops.gmmkernels.mgdm_bridge(u.contiguous(), w.contiguous(), cu, cw, std, seed, draw).to(dtype)


# ----------------------------------------------------------------------------------------------------------
# fake kernels of the native ops


if _backend.has_schema("mgdm_vi_step"):

    @torch.library.register_fake("gmmkernels::mgdm_vi_step")
    def _mgdm_vi_step_fake(state, grad_v, eps, m, inv_sigma2, lr, beta1, beta2, adam_eps, step, seed, draw):
        return torch.empty_like(grad_v), torch.empty_like(grad_v)

if _backend.has_schema("mgdm_bridge"):

    @torch.library.register_fake("gmmkernels::mgdm_bridge")
    def _mgdm_bridge_fake(u, w, cu, cw, std, seed, draw):
        return torch.empty_like(u)
