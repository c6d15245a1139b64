// Argument checks of mixture_suffstats shared by the CPU and CUDA host code (ATen; not for .cu files). The device is
// checked by each backend.
#pragma once
#include <torch/all.h>

namespace gmmkernels {
namespace mixture_suffstats {

struct Sizes {
  int64_t B, N, K, D;
};

// x [B or 1, N, D], resp [B, N, K]; float32 or float64, one dtype.
inline Sizes check_inputs(const at::Tensor& x, const at::Tensor& resp) {
  TORCH_CHECK(x.dim() == 3, "mixture_suffstats: x must be [B, N, D], got ", x.sizes());
  TORCH_CHECK(resp.dim() == 3, "mixture_suffstats: resp must be [B, N, K], got ", resp.sizes());
  TORCH_CHECK(x.scalar_type() == resp.scalar_type(), "mixture_suffstats: x and resp must have one dtype, got ",
              x.scalar_type(), " and ", resp.scalar_type());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "mixture_suffstats: float32 or float64 expected, got ", x.scalar_type());
  const int64_t B = resp.size(0), N = resp.size(1), K = resp.size(2), D = x.size(2);
  TORCH_CHECK(x.size(0) == B || x.size(0) == 1, "mixture_suffstats: x has batch ", x.size(0), " but resp has ", B);
  TORCH_CHECK(x.size(1) == N, "mixture_suffstats: x has N=", x.size(1), " but resp has N=", N);
  return {B, N, K, D};
}

}  // namespace mixture_suffstats
}  // namespace gmmkernels
