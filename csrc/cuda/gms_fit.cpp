// ATen host side of the GMS fit and fused step on CUDA (kernels in gms_fit_kernels.cu, math in gmmkernels/gms_fit.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cuda_utils.h"
#include "gmmkernels/gms_fit.h"
#include "gmmkernels/gms_fit_checks.h"
#include "gmmkernels/gms_fit_launch.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> gms_fit_cuda(const at::Tensor& mean, const at::Tensor& var, const at::Tensor& m3,
                                                            double weight, int64_t method, int64_t iters, double lr, double var_floor,
                                                            int64_t n_el) {
  gms_fit::check_fit_args(mean, var, m3, weight, method, iters, var_floor, n_el);
  const c10::cuda::CUDAGuard guard(mean.device());
  auto M1 = mean.contiguous(), V = var.contiguous(), M3 = m3.contiguous();
  auto mu1 = at::empty_like(M1), mu2 = at::empty_like(M1), v = at::empty_like(M1);
  const int64_t n = M1.numel();
  if (n == 0) return {mu1, mu2, v};
  const double scale = gms_fit::adan_scale(n_el, n);
  AT_DISPATCH_FLOATING_TYPES(M1.scalar_type(), "gms_fit_cuda", [&] {
    check_launch(launch_gms_fit<scalar_t>(M1.data_ptr<scalar_t>(), V.data_ptr<scalar_t>(), M3.data_ptr<scalar_t>(),
                                          mu1.data_ptr<scalar_t>(), mu2.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), n,
                                          static_cast<int>(method), weight, static_cast<int>(iters), lr, var_floor, scale,
                                          current_stream()),
                 "gms_fit");
  });
  return {mu1, mu2, v};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gms_step_cuda(
    const at::Tensor& x_t, const at::Tensor& e1, const at::Tensor& e2, const at::Tensor& e3, double a_t, double sigma_t, double A,
    double B, double lam2, double weight, int64_t method, int64_t iters, double lr, double var_floor, int64_t n_el, bool per_image,
    double var_clip, int64_t seed, int64_t offset, bool with_params) {
  gms_fit::check_step_args(x_t, e1, e2, e3, weight, method, iters, var_floor, n_el, offset);
  const c10::cuda::CUDAGuard guard(x_t.device());
  auto X = x_t.contiguous(), E1 = e1.contiguous(), E2 = e2.contiguous(), E3 = e3.contiguous();
  auto out = at::empty_like(X);
  auto mu1 = optional_output(with_params, X.sizes(), X.options());
  auto mu2 = optional_output(with_params, X.sizes(), X.options());
  auto v = optional_output(with_params, X.sizes(), X.options());
  const int64_t n = X.numel();
  if (n == 0) return {out, mu1, mu2, v};
  const gms_fit::StepParams P = gms_fit::make_step_params(X, a_t, sigma_t, A, B, lam2, weight, method, iters, lr, var_floor,
                                                          n_el, per_image, var_clip, seed, offset);
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "gms_step_cuda", [&] {
    check_launch(launch_gms_step<scalar_t>(X.data_ptr<scalar_t>(), E1.data_ptr<scalar_t>(), E2.data_ptr<scalar_t>(),
                                           E3.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                           with_params ? mu1.data_ptr<scalar_t>() : nullptr,
                                           with_params ? mu2.data_ptr<scalar_t>() : nullptr,
                                           with_params ? v.data_ptr<scalar_t>() : nullptr, n, P, current_stream()),
                 "gms_step");
  });
  return {out, mu1, mu2, v};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) {
  m.impl("gms_fit", &gmmkernels::gms_fit_cuda);
  m.impl("gms_step", &gmmkernels::gms_step_cuda);
}
