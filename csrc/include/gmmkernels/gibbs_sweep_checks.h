// Argument checks of gibbs_sweep shared by the CPU and CUDA host code (ATen; not for .cu files).
#pragma once
#include <torch/all.h>

namespace gmmkernels {
namespace gibbs_sweep {

// x [B or 1, N, D], logw [B, K], means and var [B, K, D], m0 [D]; one dtype and device; positive hyperparameters.
inline void check_sweep_args(const at::Tensor& x, const at::Tensor& logw, const at::Tensor& means, const at::Tensor& var,
                             const at::Tensor& m0, double alpha, double kappa0, double a0, double b0) {
  TORCH_CHECK(x.dim() == 3, "gibbs_sweep: x must be [B or 1, N, D], got ", x.sizes());
  TORCH_CHECK(logw.dim() == 2, "gibbs_sweep: logw must be [B, K], got ", logw.sizes());
  const int64_t B = logw.size(0), K = logw.size(1), D = x.size(2);
  TORCH_CHECK(x.size(0) == B || x.size(0) == 1, "gibbs_sweep: x has batch ", x.size(0), " but there are ", B, " chains");
  TORCH_CHECK(means.sizes() == at::IntArrayRef({B, K, D}), "gibbs_sweep: means must be [B, K, D] = [", B, ", ", K, ", ", D,
              "], got ", means.sizes());
  TORCH_CHECK(var.sizes() == means.sizes(), "gibbs_sweep: var must have the shape of means, got ", var.sizes());
  TORCH_CHECK(m0.dim() == 1 && m0.size(0) == D, "gibbs_sweep: m0 must be [D], got ", m0.sizes());
  TORCH_CHECK(K >= 1, "gibbs_sweep: need K >= 1 components");
  for (const auto* t : {&logw, &means, &var, &m0}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "gibbs_sweep: all tensors must have the dtype of x (", x.scalar_type(), ")");
    TORCH_CHECK(t->device() == x.device(), "gibbs_sweep: all tensors must be on the device of x (", x.device(), ")");
  }
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "gibbs_sweep: float32 or float64 expected");
  TORCH_CHECK(alpha > 0 && kappa0 > 0 && a0 > 0 && b0 > 0, "gibbs_sweep: alpha, kappa0, a0, b0 must be positive");
}

}  // namespace gibbs_sweep
}  // namespace gmmkernels
