// Argument checks of the MGDM ops (mgdm_vi_step, mgdm_bridge) shared by the CPU and CUDA host code
// (ATen; not for .cu files).
#pragma once
#include <torch/all.h>

namespace gmmkernels {
namespace mgdm_step {

inline void check_same(const char* fn, const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.sizes() == ref.sizes(), fn, ": ", name, " must have shape ", ref.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), fn, ": ", name, " must have dtype ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), fn, ": ", name, " is on ", t.device(), ", expected ", ref.device());
}

// state [6, B, P] = (mu, rho, m_mu, m_rho, v_mu, v_rho), updated in place; grad_v, eps, m [B, P]; inv_sigma2 [B].
inline void check_vi_step_args(const at::Tensor& state, const at::Tensor& grad_v, const at::Tensor& eps, const at::Tensor& m,
                               const at::Tensor& inv_sigma2, int64_t step) {
  TORCH_CHECK(state.dim() == 3 && state.size(0) == 6,
              "mgdm_vi_step: state must be [6, B, P] (mu, rho, m_mu, m_rho, v_mu, v_rho), got ", state.sizes());
  TORCH_CHECK(state.is_contiguous(), "mgdm_vi_step: state must be contiguous (it is updated in place)");
  TORCH_CHECK(state.scalar_type() == at::kFloat || state.scalar_type() == at::kDouble,
              "mgdm_vi_step: float32 or float64 expected, got ", state.scalar_type());
  TORCH_CHECK(step >= 1, "mgdm_vi_step: step counts Adam steps from 1, got ", step);
  const auto like = state.select(0, 0);
  check_same("mgdm_vi_step", like, grad_v, "grad_v");
  check_same("mgdm_vi_step", like, eps, "eps");
  check_same("mgdm_vi_step", like, m, "m");
  TORCH_CHECK(inv_sigma2.dim() == 1 && inv_sigma2.size(0) == state.size(1) && inv_sigma2.scalar_type() == state.scalar_type() &&
                  inv_sigma2.device() == state.device(),
              "mgdm_vi_step: inv_sigma2 must be [B] with the dtype and device of state, got ", inv_sigma2.sizes());
}

inline void check_bridge_args(const at::Tensor& u, const at::Tensor& w) {
  check_same("mgdm_bridge", u, w, "w");
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble, "mgdm_bridge: float32 or float64 expected, got ",
              u.scalar_type());
}

}  // namespace mgdm_step
}  // namespace gmmkernels
