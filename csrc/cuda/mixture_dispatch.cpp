// ATen host code of the CUDA gmmkernels::mixture_dispatch: checks, allocation, |c_k|^2, launch on the current
// stream. The kernel is in mixture_dispatch_kernels.cu (no torch headers there).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include <cuda_runtime_api.h>

#include "gmmkernels/mixture_dispatch_launch.h"
#include "gmmkernels/mixture_dispatch_checks.h"

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_dispatch_cuda(const at::Tensor& x0, const at::Tensor& centers,
                                                                     const at::Tensor& a, const at::Tensor& sigma,
                                                                     const std::optional<at::Tensor>& eps) {
  const bool has_eps = gmmkernels::check_mixture_dispatch_args(x0, centers, a, sigma, eps);
  const int64_t N = x0.size(0), D = x0.size(1), K = centers.size(0);
  const auto dt = x0.scalar_type();
  c10::cuda::CUDAGuard guard(x0.device());
  auto xc = x0.contiguous();
  auto cc = centers.contiguous();
  auto ac = a.contiguous();
  auto sc = sigma.contiguous();
  at::Tensor ec = has_eps ? eps->contiguous() : at::Tensor();
  auto cn = (cc * cc).sum(1).contiguous();
  auto xt = at::empty({N, D}, x0.options());
  auto assign = at::empty({N}, x0.options().dtype(at::kLong));
  auto dist2 = at::empty({N}, x0.options());
  if (N == 0) return {xt, assign, dist2};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  int err;
  if (dt == at::kFloat) {
    err = gmmkernels::mixture_dispatch_cuda_f32(xc.data_ptr<float>(), cc.data_ptr<float>(), cn.data_ptr<float>(),
                                                ac.data_ptr<float>(), sc.data_ptr<float>(),
                                                has_eps ? ec.data_ptr<float>() : nullptr, xt.data_ptr<float>(),
                                                assign.data_ptr<int64_t>(), dist2.data_ptr<float>(), N, K, D, stream);
  } else {
    err = gmmkernels::mixture_dispatch_cuda_f64(xc.data_ptr<double>(), cc.data_ptr<double>(), cn.data_ptr<double>(),
                                                ac.data_ptr<double>(), sc.data_ptr<double>(),
                                                has_eps ? ec.data_ptr<double>() : nullptr, xt.data_ptr<double>(),
                                                assign.data_ptr<int64_t>(), dist2.data_ptr<double>(), N, K, D, stream);
  }
  TORCH_CHECK(err == 0, "mixture_dispatch: CUDA launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(err)));
  return {xt, assign, dist2};
}

}  // namespace

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) { m.impl("mixture_dispatch", &mixture_dispatch_cuda); }
