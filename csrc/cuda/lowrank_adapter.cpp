// CUDA host code of gmmkernels::lowrank_adapter and lowrank_adapter_backward: checks, allocation, dispatch to the
// raw-pointer launchers of csrc/cuda/lowrank_adapter_kernels.cu. See csrc/cpu/lowrank_adapter.cpp for the math.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "gmmkernels/lowrank_adapter_checks.h"
#include "gmmkernels/lowrank_adapter_cuda.h"

namespace gmmkernels {
namespace {

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "lowrank_adapter: CUDA ", what, " kernel launch failed: ", cudaGetErrorString(err));
}

at::Tensor lowrank_adapter_cuda(const at::Tensor& r, const at::Tensor& u, const at::Tensor& s) {
  const auto z = lra::check_inputs(r, u, s, c10::DeviceType::CUDA);
  TORCH_CHECK(z.d <= INT32_MAX && z.L <= INT32_MAX, "lowrank_adapter: d and L must fit in 32 bits");
  c10::cuda::CUDAGuard guard(r.device());
  auto rc = r.contiguous();
  auto uc = u.contiguous();
  auto c = lra::diag_coeff(s).contiguous();
  auto out = at::empty({z.P, z.d}, r.options());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "lowrank_adapter_cuda", [&] {
    check_launch(lra_cuda::forward<scalar_t>(rc.const_data_ptr<scalar_t>(), uc.const_data_ptr<scalar_t>(),
                                             c.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), z.P,
                                             z.L, z.d, stream),
                 "forward");
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lowrank_adapter_backward_cuda(const at::Tensor& grad_out,
                                                                             const at::Tensor& r, const at::Tensor& u,
                                                                             const at::Tensor& s) {
  const auto z = lra::check_inputs(r, u, s, c10::DeviceType::CUDA);
  lra::check_grad(z, grad_out, r);
  TORCH_CHECK(z.d <= INT32_MAX && z.L <= INT32_MAX, "lowrank_adapter: d and L must fit in 32 bits");
  c10::cuda::CUDAGuard guard(r.device());
  auto gc = grad_out.contiguous();
  auto rc = r.contiguous();
  auto uc = u.contiguous();
  auto c = lra::diag_coeff(s).contiguous();
  auto grad_r = at::empty({z.P, z.d}, r.options());
  auto grad_u = at::empty({z.P, z.L, z.d}, r.options());
  auto gc_part = at::empty({z.P, z.L}, r.options());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "lowrank_adapter_backward_cuda", [&] {
    check_launch(lra_cuda::backward<scalar_t>(gc.const_data_ptr<scalar_t>(), rc.const_data_ptr<scalar_t>(),
                                              uc.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
                                              grad_r.mutable_data_ptr<scalar_t>(), grad_u.mutable_data_ptr<scalar_t>(),
                                              gc_part.mutable_data_ptr<scalar_t>(), z.P, z.L, z.d, stream),
                 "backward");
  });
  auto grad_s = lra::diag_coeff_backward(gc_part.sum(0), s);
  return {grad_r, grad_u, grad_s};
}

}  // namespace

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) {
  m.impl("lowrank_adapter", &lowrank_adapter_cuda);
  m.impl("lowrank_adapter_backward", &lowrank_adapter_backward_cuda);
}

}  // namespace gmmkernels
