// Maths of the SMD low-rank adapter shared by the CPU and CUDA host code (csrc/cpu/lowrank_adapter.cpp,
// csrc/cuda/lowrank_adapter.cpp); the kernel is described in docs/kernels.md (lowrank_adapter), the method in
// docs/methods.md (SMD).
//
//   out = W_L ( ... (W_1 r)),  W_l r = u_l (u_l . r) + c_l r,  c_l = softplus(s_l)
//
// The L diagonal coefficients c = softplus(s) (threshold 20, as torch.nn.functional.softplus) are computed once per
// call with ATen on the device of s; the kernels only see c, and return the per-pixel parts gc_part [P, L] of dL/dc
// from which diag_coeff_backward forms grad_s. ATen, so not for .cu files.
#pragma once

#include <ATen/ATen.h>

namespace gmmkernels {
namespace lowrank_adapter {

// c = softplus(s), contiguous.
inline at::Tensor diag_coeff(const at::Tensor& s) { return at::softplus(s, 1, 20).contiguous(); }

// grad_s = softplus'(s) * sum_p gc_part[p, :].
inline at::Tensor diag_coeff_backward(const at::Tensor& gc_part, const at::Tensor& s) {
  return at::softplus_backward(gc_part.sum(0), s, 1, 20);
}

}  // namespace lowrank_adapter
}  // namespace gmmkernels
