// ATen host code of the CUDA gmmkernels::mixture_dispatch: checks, allocation, |c_k|^2, launch on the current
// stream. The kernel is in mixture_dispatch_kernel.cu (no torch headers there).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include <cuda_runtime_api.h>

#include "gmmkernels/mixture_dispatch.h"

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_dispatch_cuda(const at::Tensor& x0, const at::Tensor& centers,
                                                                     const at::Tensor& a, const at::Tensor& sigma,
                                                                     const std::optional<at::Tensor>& eps) {
  TORCH_CHECK(x0.dim() == 2, "mixture_dispatch: x0 must be [N, D], got ", x0.sizes());
  TORCH_CHECK(centers.dim() == 2, "mixture_dispatch: centers must be [K, D], got ", centers.sizes());
  const int64_t N = x0.size(0), D = x0.size(1), K = centers.size(0);
  TORCH_CHECK(centers.size(1) == D, "mixture_dispatch: centers has D=", centers.size(1), " but x0 has D=", D);
  TORCH_CHECK(K >= 1, "mixture_dispatch: centers must hold at least one center");
  TORCH_CHECK(a.dim() == 1 && a.size(0) == N, "mixture_dispatch: a must be [N=", N, "], got ", a.sizes());
  TORCH_CHECK(sigma.dim() == 1 && sigma.size(0) == N, "mixture_dispatch: sigma must be [N=", N, "], got ",
              sigma.sizes());
  const bool has_eps = eps.has_value() && eps->defined();
  const auto dt = x0.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, "mixture_dispatch: CUDA kernel takes float32/float64, got ", dt);
  TORCH_CHECK(x0.is_cuda(), "mixture_dispatch: x0 must be a CUDA tensor");
  for (const at::Tensor* t : {&centers, &a, &sigma}) {
    TORCH_CHECK(t->scalar_type() == dt, "mixture_dispatch: all inputs must share the dtype of x0 (", dt, ")");
    TORCH_CHECK(t->device() == x0.device(), "mixture_dispatch: all inputs must be on x0's device");
  }
  if (has_eps) {
    TORCH_CHECK(eps->sizes() == x0.sizes(), "mixture_dispatch: eps must have the shape of x0 ", x0.sizes(), ", got ",
                eps->sizes());
    TORCH_CHECK(eps->scalar_type() == dt && eps->device() == x0.device(),
                "mixture_dispatch: eps must match x0's dtype/device");
  }
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
