// Argument checks of gmmkernels::mixture_em_stats shared by the CPU and CUDA host code (ATen; not for .cu files).
// Every message starts with "mixture_em_stats:" and names the argument.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace gmmkernels {
namespace mixture_em_stats {

struct Sizes {
  int64_t B, N, K, D;
};

// x [B or 1, N, D], means [B, K, D], prec [B, K, D] (full=false) or [B, K, D, D] (full=true), logc [B, K]; one
// float dtype and one device of type `expect`.
inline Sizes check_inputs(const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec, const at::Tensor& logc,
                          bool full, c10::DeviceType expect) {
  const std::pair<const char*, const at::Tensor*> args[] = {{"x", &x}, {"means", &means}, {"prec", &prec}, {"logc", &logc}};
  for (const auto& a : args) {
    TORCH_CHECK(a.second->defined(), "mixture_em_stats: argument '", a.first, "' is undefined");
    TORCH_CHECK(a.second->device().type() == expect && a.second->device() == x.device(), "mixture_em_stats: argument '",
                a.first, "' is on ", a.second->device(), "; this kernel runs on one ", c10::DeviceTypeName(expect),
                " device (x is on ", x.device(), ")");
    TORCH_CHECK(a.second->scalar_type() == x.scalar_type(), "mixture_em_stats: argument '", a.first, "' has dtype ",
                a.second->scalar_type(), " but 'x' has ", x.scalar_type(), "; all tensors must share one dtype");
  }
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "mixture_em_stats: argument 'x' must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 3, "mixture_em_stats: argument 'x' must have shape [B or 1, N, D], got ", x.sizes());
  TORCH_CHECK(means.dim() == 3, "mixture_em_stats: argument 'means' must have shape [B, K, D], got ", means.sizes());
  const int64_t B = means.size(0), K = means.size(1), D = means.size(2), N = x.size(1);
  TORCH_CHECK((x.size(0) == B || x.size(0) == 1) && x.size(2) == D, "mixture_em_stats: argument 'x' must have shape [B=",
              B, " or 1, N, D=", D, "] to match 'means' ", means.sizes(), ", got ", x.sizes());
  TORCH_CHECK(K >= 1, "mixture_em_stats: argument 'means' has K=0 components; at least one is needed");
  TORCH_CHECK(logc.dim() == 2 && logc.size(0) == B && logc.size(1) == K,
              "mixture_em_stats: argument 'logc' must have shape [B=", B, ", K=", K, "], got ", logc.sizes());
  if (full) {
    TORCH_CHECK(prec.dim() == 4 && prec.size(0) == B && prec.size(1) == K && prec.size(2) == D && prec.size(3) == D,
                "mixture_em_stats: argument 'prec' (full=true) must have shape [B=", B, ", K=", K, ", D=", D, ", D=", D,
                "], got ", prec.sizes());
  } else {
    TORCH_CHECK(prec.dim() == 3 && prec.size(0) == B && prec.size(1) == K && prec.size(2) == D,
                "mixture_em_stats: argument 'prec' (full=false) must have shape [B=", B, ", K=", K, ", D=", D,
                "], got ", prec.sizes());
  }
  return {B, N, K, D};
}

}  // namespace mixture_em_stats
}  // namespace gmmkernels
