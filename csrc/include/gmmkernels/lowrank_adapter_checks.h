// Argument checks of gmmkernels::lowrank_adapter and lowrank_adapter_backward (host code, shared by the CPU and
// CUDA implementations). Every message starts with "lowrank_adapter:" and names the offending argument.
//
//   r [P, d]      input vectors (one per pixel)
//   u [P, L, d]   rank-one factors u_l per pixel and layer
//   s [L]         raw per-layer scalars; the diagonal is softplus(s_l) (gmmkernels/lowrank_adapter.h)
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace gmmkernels {
namespace lowrank_adapter {

struct Sizes {
  int64_t P, L, d;
};

inline void check_like(const at::Tensor& t, const char* name, const at::Tensor& r) {
  TORCH_CHECK(t.defined(), "lowrank_adapter: argument '", name, "' is undefined");
  TORCH_CHECK(t.scalar_type() == r.scalar_type(), "lowrank_adapter: argument '", name, "' has dtype ", t.scalar_type(),
              " but 'r' has dtype ", r.scalar_type(), "; all tensors must share one dtype");
  TORCH_CHECK(t.device() == r.device(), "lowrank_adapter: argument '", name, "' is on ", t.device(), " but 'r' is on ",
              r.device(), "; all tensors must be on one device");
}

inline Sizes check_inputs(const at::Tensor& r, const at::Tensor& u, const at::Tensor& s, c10::DeviceType expect) {
  TORCH_CHECK(r.defined(), "lowrank_adapter: argument 'r' is undefined");
  TORCH_CHECK(r.device().type() == expect, "lowrank_adapter: argument 'r' is on ", r.device(),
              " but this kernel runs on ", c10::DeviceTypeName(expect));
  TORCH_CHECK(r.scalar_type() == at::kFloat || r.scalar_type() == at::kDouble,
              "lowrank_adapter: argument 'r' must be float32 or float64, got ", r.scalar_type());
  check_like(u, "u", r);
  check_like(s, "s", r);
  TORCH_CHECK(r.dim() == 2, "lowrank_adapter: argument 'r' must have shape [P, d], got ", r.sizes());
  const int64_t P = r.size(0), d = r.size(1);
  TORCH_CHECK(u.dim() == 3 && u.size(0) == P && u.size(2) == d, "lowrank_adapter: argument 'u' must have shape [P=", P,
              ", L, d=", d, "], got ", u.sizes());
  const int64_t L = u.size(1);
  TORCH_CHECK(s.dim() == 1 && s.size(0) == L, "lowrank_adapter: argument 's' must have shape [L=", L, "], got ",
              s.sizes());
  return {P, L, d};
}

inline void check_grad(const Sizes& z, const at::Tensor& grad_out, const at::Tensor& r) {
  check_like(grad_out, "grad_out", r);
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == z.P && grad_out.size(1) == z.d,
              "lowrank_adapter: argument 'grad_out' must have shape [P=", z.P, ", d=", z.d, "], got ",
              grad_out.sizes());
}

}  // namespace lowrank_adapter
}  // namespace gmmkernels
