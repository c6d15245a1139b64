// Argument checks of gibbs_sweep shared by the CPU and CUDA host code (ATen; not for .cu files).
#pragma once
#include <torch/all.h>

#include <climits>

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

// A call of the block-program kernels (gmmkernels/gibbs_sweep_blocks.h), prepared by the CUDA host code and by their
// CPU run (csrc/simt/gibbs_sweep.cpp): the arguments checked (with the kernels' int32 index limits), the inputs made
// contiguous and the outputs allocated.
struct BlockCall {
  int64_t B, N, K, D;
  at::Tensor x, logw, means, var, m0, z, logw_o, mu_o, var_o;
};

inline BlockCall prepare_block_call(const at::Tensor& x, const at::Tensor& logw, const at::Tensor& means,
                                    const at::Tensor& var, const at::Tensor& m0, double alpha, double kappa0, double a0,
                                    double b0, int64_t chain0) {
  check_sweep_args(x, logw, means, var, m0, alpha, kappa0, a0, b0);
  TORCH_CHECK(chain0 >= 0, "gibbs_sweep: chain0 must be >= 0, got ", chain0);
  BlockCall c;
  c.B = logw.size(0);
  c.K = logw.size(1);
  c.N = x.size(1);
  c.D = x.size(2);
  TORCH_CHECK(c.N < INT32_MAX && c.K * (c.D + 1) < INT32_MAX && c.B < INT32_MAX,
              "gibbs_sweep: sizes too large for one GPU call (B=", c.B, ", N=", c.N, ", K=", c.K, ", D=", c.D,
              "); split the chains or the data");
  c.x = x.contiguous();
  c.logw = logw.contiguous();
  c.means = means.contiguous();
  c.var = var.contiguous();
  c.m0 = m0.contiguous();
  c.z = at::empty({c.B, c.N}, x.options().dtype(at::kInt));
  c.logw_o = at::empty_like(c.logw);
  c.mu_o = at::empty_like(c.means);
  c.var_o = at::empty_like(c.var);
  return c;
}

}  // namespace gibbs_sweep
}  // namespace gmmkernels
