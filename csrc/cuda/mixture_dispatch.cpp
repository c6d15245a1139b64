// ATen host code of the CUDA gmmkernels::mixture_dispatch: checks, allocation, |c_k|^2, launch on the current
// stream. The kernel is in mixture_dispatch_kernels.cu (no torch headers there).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cuda_utils.h"
#include "gmmkernels/mixture_dispatch_checks.h"
#include "gmmkernels/mixture_dispatch_launch.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_dispatch_cuda(const at::Tensor& x0, const at::Tensor& centers,
                                                                     const at::Tensor& a, const at::Tensor& sigma,
                                                                     const std::optional<at::Tensor>& eps) {
  mixture_dispatch::check_inputs(x0, centers, a, sigma, eps);
  const int64_t N = x0.size(0), D = x0.size(1), K = centers.size(0);
  const c10::cuda::CUDAGuard guard(x0.device());
  auto xc = x0.contiguous();
  auto cc = centers.contiguous();
  auto ac = a.contiguous();
  auto sc = sigma.contiguous();
  auto ec = optional_contiguous(eps);
  auto cn = (cc * cc).sum(1).contiguous();
  auto xt = at::empty({N, D}, x0.options());
  auto assign = at::empty({N}, x0.options().dtype(at::kLong));
  auto dist2 = at::empty({N}, x0.options());
  if (N == 0) return {xt, assign, dist2};
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), "mixture_dispatch_cuda", [&] {
    check_launch(launch_mixture_dispatch<scalar_t>(xc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                                                   cn.data_ptr<scalar_t>(), ac.data_ptr<scalar_t>(),
                                                   sc.data_ptr<scalar_t>(), optional_data<scalar_t>(ec),
                                                   xt.data_ptr<scalar_t>(), assign.data_ptr<int64_t>(),
                                                   dist2.data_ptr<scalar_t>(), N, K, D, current_stream()),
                 "mixture_dispatch");
  });
  return {xt, assign, dist2};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) { m.impl("mixture_dispatch", &gmmkernels::mixture_dispatch_cuda); }
