// Argument checks of the GMS ops shared by the CPU and CUDA host code (ATen; not for .cu files).
#pragma once
#include <torch/all.h>

#include "gmmkernels/gms_fit.h"

namespace gmmkernels {
namespace gms_fit {

inline void check_like(const char* fn, const at::Tensor& ref, const at::Tensor& t, const char* name, const char* ref_name) {
  TORCH_CHECK(t.sizes() == ref.sizes(), fn, ": ", name, " must have the shape of ", ref_name, " ", ref.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), fn, ": ", name, " has dtype ", t.scalar_type(), " but ", ref_name, " has ",
              ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), fn, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ", ref.device());
}

inline void check_common(const char* fn, const at::Tensor& x, double weight, int64_t iters, double var_floor, int64_t n_el) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, fn, ": float32 or float64 expected, got ",
              x.scalar_type());
  TORCH_CHECK(weight > 0.0 && weight < 1.0, fn, ": weight must be in (0, 1), got ", weight);
  TORCH_CHECK(iters >= 0 && iters <= (1 << 20), fn, ": iters must be in [0, 2^20], got ", iters);
  TORCH_CHECK(var_floor >= 0.0 && var_floor <= 1.0, fn, ": var_floor must be in [0, 1], got ", var_floor);
  TORCH_CHECK(n_el >= 0, fn, ": n_el must be >= 0 (0 = number of elements), got ", n_el);
}

inline void check_fit_args(const at::Tensor& mean, const at::Tensor& var, const at::Tensor& m3, double weight, int64_t method,
                           int64_t iters, double var_floor, int64_t n_el) {
  const char* fn = "gms_fit";
  check_common(fn, mean, weight, iters, var_floor, n_el);
  check_like(fn, mean, var, "var", "mean");
  check_like(fn, mean, m3, "third_moment", "mean");
  TORCH_CHECK(method == 0 || method == 1, fn, ": method must be 0 (closed) or 1 (adan), got ", method);
}

inline void check_step_args(const at::Tensor& x_t, const at::Tensor& e1, const at::Tensor& e2, const at::Tensor& e3, double weight,
                            int64_t method, int64_t iters, double var_floor, int64_t n_el, int64_t offset) {
  const char* fn = "gms_step";
  check_common(fn, x_t, weight, iters, var_floor, n_el);
  check_like(fn, x_t, e1, "e1", "x_t");
  check_like(fn, x_t, e2, "e2", "x_t");
  check_like(fn, x_t, e3, "e3", "x_t");
  TORCH_CHECK(method == 0 || method == 1 || method == 2, fn, ": method must be 0 (closed), 1 (adan) or 2 (gaussian), got ", method);
  TORCH_CHECK(offset >= 0 && offset <= 0xFFFFFFFFll, fn, ": offset must be in [0, 2^32), got ", offset);
}

// Per-call parameters of the step kernels; X is the contiguous x_t.
inline StepParams make_step_params(const at::Tensor& X, double a_t, double sigma_t, double A, double B, double lam2, double weight,
                                   int64_t method, int64_t iters, double lr, double var_floor, int64_t n_el, bool per_image,
                                   double var_clip, int64_t seed, int64_t offset) {
  const int64_t n = X.numel();
  StepParams P;
  P.coef = StepCoef{a_t, sigma_t, A, B, lam2};
  P.w = weight;
  P.lr = lr;
  P.floor_frac = var_floor;
  P.var_clip = var_clip;
  P.scale = adan_scale(n_el, n);
  P.method = static_cast<int>(method);
  P.iters = static_cast<int>(iters);
  P.per_image = per_image ? 1 : 0;
  P.seed = static_cast<uint64_t>(seed);
  P.offset = static_cast<uint32_t>(offset);
  P.inner = X.dim() == 0 || X.size(0) == 0 ? 1 : n / X.size(0);
  return P;
}

}  // namespace gms_fit
}  // namespace gmmkernels
