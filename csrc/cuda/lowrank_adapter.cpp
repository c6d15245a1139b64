// CUDA host code of gmmkernels::lowrank_adapter and lowrank_adapter_backward: checks, allocation, dispatch to the
// raw-pointer launchers of csrc/cuda/lowrank_adapter_kernels.cu. See csrc/cpu/lowrank_adapter.cpp for the math.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

#include "gmmkernels/cuda_utils.h"
#include "gmmkernels/lowrank_adapter.h"
#include "gmmkernels/lowrank_adapter_checks.h"
#include "gmmkernels/lowrank_adapter_launch.h"

namespace gmmkernels {
namespace {

at::Tensor lowrank_adapter_cuda(const at::Tensor& r, const at::Tensor& u, const at::Tensor& s) {
  const auto z = lowrank_adapter::check_inputs(r, u, s, c10::DeviceType::CUDA);
  TORCH_CHECK(z.d <= INT32_MAX && z.L <= INT32_MAX, "lowrank_adapter: d and L must fit in 32 bits");
  const c10::cuda::CUDAGuard guard(r.device());
  auto rc = r.contiguous();
  auto uc = u.contiguous();
  auto c = lowrank_adapter::diag_coeff(s);
  auto out = at::empty({z.P, z.d}, r.options());
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "lowrank_adapter_cuda", [&] {
    check_launch(launch_lowrank_adapter_forward<scalar_t>(rc.const_data_ptr<scalar_t>(), uc.const_data_ptr<scalar_t>(),
                                                          c.const_data_ptr<scalar_t>(),
                                                          out.mutable_data_ptr<scalar_t>(), z.P, z.L, z.d,
                                                          current_stream()),
                 "lowrank_adapter");
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lowrank_adapter_backward_cuda(const at::Tensor& grad_out,
                                                                             const at::Tensor& r, const at::Tensor& u,
                                                                             const at::Tensor& s) {
  const auto z = lowrank_adapter::check_inputs(r, u, s, c10::DeviceType::CUDA);
  lowrank_adapter::check_grad(z, grad_out, r);
  TORCH_CHECK(z.d <= INT32_MAX && z.L <= INT32_MAX, "lowrank_adapter: d and L must fit in 32 bits");
  const c10::cuda::CUDAGuard guard(r.device());
  auto gc = grad_out.contiguous();
  auto rc = r.contiguous();
  auto uc = u.contiguous();
  auto c = lowrank_adapter::diag_coeff(s);
  auto grad_r = at::empty({z.P, z.d}, r.options());
  auto grad_u = at::empty({z.P, z.L, z.d}, r.options());
  auto gc_part = at::empty({z.P, z.L}, r.options());
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "lowrank_adapter_backward_cuda", [&] {
    check_launch(launch_lowrank_adapter_backward<scalar_t>(
                     gc.const_data_ptr<scalar_t>(), rc.const_data_ptr<scalar_t>(), uc.const_data_ptr<scalar_t>(),
                     c.const_data_ptr<scalar_t>(), grad_r.mutable_data_ptr<scalar_t>(),
                     grad_u.mutable_data_ptr<scalar_t>(), gc_part.mutable_data_ptr<scalar_t>(), z.P, z.L, z.d,
                     current_stream()),
                 "lowrank_adapter");
  });
  auto grad_s = lowrank_adapter::diag_coeff_backward(gc_part, s);
  return {grad_r, grad_u, grad_s};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) {
  m.impl("lowrank_adapter", &gmmkernels::lowrank_adapter_cuda);
  m.impl("lowrank_adapter_backward", &gmmkernels::lowrank_adapter_backward_cuda);
}
