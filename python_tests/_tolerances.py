"""Tolerances of the comparisons with the float64 reference, in one place (docs/kernels.md (Contract) states the
bounds they check).

Errors are measured against the float64 reference evaluated on the *same rounded inputs* (``t.to(dtype).double()``),
so only the arithmetic of a backend is judged, not the rounding of its inputs. :func:`err` is the max-norm error of a
tensor relative to the tensor's own scale, max |out - ref| / max(max |ref|, 1).

Exact modes (every backend with ``precision="ieee"``) follow the flash-attention criterion: a backend's error may be
at most ``FACTOR`` times the error of the eager reference computed in the backend's compute dtype (the same formulas,
plain torch ops), plus the slack of the (output dtype, what) pair in ``SLACK`` (rounding of the output for half
dtypes, a few units of fp32 rounding for reductions that the kernels order differently), plus
``COND_SLACK[dtype] * cond``: the noise floor of the responsibilities, whose fp32 error is about
r (1 - r) u |logit| with logits of any size (:func:`resp_condition`). Where one component dominates a row, r (1 - r)
vanishes and so does this term: the eager softmax is exact there, and so must the kernels be. The GEMM-form modes of
the Triton backend have their own bound, :func:`gemm_logit_bound`.
"""
from __future__ import annotations

import torch
from torch import Tensor

UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}

FACTOR = 2.0

# slack added to FACTOR * eager error, per (dtype of the outputs, what is compared): "value" = outputs, "grad" = first
# derivatives, "grad2" = second derivatives
_U32 = UNIT_ROUNDOFF[torch.float32]
SLACK = {
    (torch.float64, "value"): 1e-12, (torch.float64, "grad"): 1e-10, (torch.float64, "grad2"): 1e-9,
    (torch.float32, "value"): 16 * _U32, (torch.float32, "grad"): 64 * _U32, (torch.float32, "grad2"): 256 * _U32,
    # half dtypes: computed in float32, the outputs rounded to the half dtype (one unit roundoff, relative)
    (torch.float16, "value"): 2 * UNIT_ROUNDOFF[torch.float16],
    (torch.float16, "grad"): 4 * UNIT_ROUNDOFF[torch.float16],
    (torch.float16, "grad2"): 8 * UNIT_ROUNDOFF[torch.float16],
    (torch.bfloat16, "value"): 2 * UNIT_ROUNDOFF[torch.bfloat16],
    (torch.bfloat16, "grad"): 4 * UNIT_ROUNDOFF[torch.bfloat16],
    (torch.bfloat16, "grad2"): 8 * UNIT_ROUNDOFF[torch.bfloat16],
}

# per compute dtype: multiple of resp_condition() added to the slack
COND_SLACK = {torch.float64: 4 * UNIT_ROUNDOFF[torch.float64], torch.float32: 4 * _U32}

# operand unit roundoff of the GEMM-form precision modes of the Triton backend (tf32: 10 explicit mantissa bits,
# bf16: 7; accumulation in fp32 in every mode)
OPERAND_ROUNDOFF = {"fp32-gemm": _U32, "tf32": 2.0**-11, "bf16": 2.0**-8}


def err(out: Tensor, ref: Tensor) -> float:
    """max |out - ref| / max(max |ref|, 1); 0 for empty tensors. NaN where the reference is finite counts as inf."""
    if ref.numel() == 0:
        return 0.0
    out = out.detach().to(device=ref.device, dtype=torch.float64)
    ref = ref.detach().to(torch.float64)
    same_nonfinite = (out == ref) | (torch.isnan(out) & torch.isnan(ref))
    diff = torch.where(same_nonfinite, torch.zeros_like(ref), (out - ref).abs())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    scale = ref[torch.isfinite(ref)].abs().max().clamp_min(1.0) if torch.isfinite(ref).any() else torch.tensor(1.0)
    return float(diff.max() / scale)


def resp_condition(log_prob: Tensor, resp: Tensor) -> float:
    """max over rows of max_k r (1 - r) * max_k |logit| (finite logits, logit = log p + log r), from the float64
    reference: how much fp32 rounding of the logits moves the responsibilities."""
    r = resp.detach().double()
    logit = torch.log(r) + log_prob.detach().double().unsqueeze(-1)
    mag = torch.where(torch.isfinite(logit), logit.abs(), torch.zeros_like(logit)).amax(-1)
    spread = (r * (1 - r)).amax(-1)
    return float((spread * mag).max()) if r.numel() else 0.0


def allowed(dtype: torch.dtype, what: str, eager_err: float, cond: float = 0.0) -> float:
    """The largest error a backend may have where the eager reference in the compute dtype errs by ``eager_err``."""
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    return FACTOR * eager_err + SLACK[(dtype, what)] + COND_SLACK[cdt] * cond


def check(out: Tensor, ref: Tensor, eager: Tensor, dtype: torch.dtype, what: str, name: str = "",
          cond: float = 0.0) -> None:
    """Assert the flash-attention criterion for one tensor (see the module docstring)."""
    e, e0 = err(out, ref), err(eager, ref)
    bound = allowed(dtype, what, e0, cond)
    assert e <= bound, (f"{name}: error {e:.3e} > {FACTOR:g} x eager {e0:.3e} + slack {SLACK[(dtype, what)]:.1e} "
                        f"+ condition term {bound - FACTOR * e0 - SLACK[(dtype, what)]:.1e}")


def gemm_logit_bound(precision: str, x: Tensor, means: Tensor, w: Tensor) -> Tensor:
    """Worst-case error of the GEMM-form logits, per point and component [B, N, K] (docs/kernels.md (Contract)):

        |d logit_nk| <= (2 u_op + D u_32) * 1/2 sum_d w_kd^2 (|x_nd| + |mu_kd|)^2

    (x [B, N, D], means and w [B, K, D]). The logits are x.a - x^2.p / 2 - a.mu / 2 with p = w^2, a = p mu: every
    product carries the rounding of its two operands (u_op each) and the sums the fp32 accumulation error. log p errs by
    at most the largest logit error of its row."""
    u_op = OPERAND_ROUNDOFF[precision]
    D = x.shape[-1]
    xa = x.double().abs().unsqueeze(-2)  # [B, N, 1, D]
    ma = means.double().abs().unsqueeze(-3)  # [B, 1, K, D]
    p = w.double().square().unsqueeze(-3)
    return (2 * u_op + D * _U32) * 0.5 * (p * (xa + ma).square()).sum(-1)
