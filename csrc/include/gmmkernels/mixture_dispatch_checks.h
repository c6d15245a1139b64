// Argument checks of mixture_dispatch shared by the CPU and CUDA host code (ATen; not for .cu files).
#pragma once
#include <torch/all.h>

#include <optional>

namespace gmmkernels {
namespace mixture_dispatch {

// x0 [N, D], centers [K >= 1, D], a and sigma [N], eps (optional) [N, D]; float32/float64, one dtype and device.
inline void check_inputs(const at::Tensor& x0, const at::Tensor& centers, const at::Tensor& a, const at::Tensor& sigma,
                         const std::optional<at::Tensor>& eps) {
  TORCH_CHECK(x0.dim() == 2, "mixture_dispatch: x0 must be [N, D], got ", x0.sizes());
  TORCH_CHECK(centers.dim() == 2, "mixture_dispatch: centers must be [K, D], got ", centers.sizes());
  const int64_t N = x0.size(0), D = x0.size(1);
  TORCH_CHECK(centers.size(1) == D, "mixture_dispatch: centers has D=", centers.size(1), " but x0 has D=", D);
  TORCH_CHECK(centers.size(0) >= 1, "mixture_dispatch: centers must hold at least one center");
  TORCH_CHECK(a.dim() == 1 && a.size(0) == N, "mixture_dispatch: a must be [N=", N, "], got ", a.sizes());
  TORCH_CHECK(sigma.dim() == 1 && sigma.size(0) == N, "mixture_dispatch: sigma must be [N=", N, "], got ", sigma.sizes());
  const auto dt = x0.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, "mixture_dispatch: float32 or float64 expected, got ", dt);
  for (const at::Tensor* t : {&centers, &a, &sigma}) {
    TORCH_CHECK(t->scalar_type() == dt, "mixture_dispatch: all inputs must share the dtype of x0 (", dt, ")");
    TORCH_CHECK(t->device() == x0.device(), "mixture_dispatch: all inputs must be on x0's device (", x0.device(), ")");
  }
  if (eps.has_value() && eps->defined()) {
    TORCH_CHECK(eps->sizes() == x0.sizes(), "mixture_dispatch: eps must have the shape of x0 ", x0.sizes(), ", got ",
                eps->sizes());
    TORCH_CHECK(eps->scalar_type() == dt && eps->device() == x0.device(), "mixture_dispatch: eps must match x0's dtype/device");
  }
}

}  // namespace mixture_dispatch
}  // namespace gmmkernels
