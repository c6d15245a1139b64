// ATen host side of the fused MGDM steps on CUDA (kernels in mgdm_step_kernels.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

#include "gmmkernels/cuda_utils.h"
#include "gmmkernels/mgdm_step.h"
#include "gmmkernels/mgdm_step_checks.h"
#include "gmmkernels/mgdm_step_launch.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor> mgdm_vi_step_cuda(at::Tensor& state, const at::Tensor& grad_v, const at::Tensor& eps,
                                                     const at::Tensor& m, const at::Tensor& inv_sigma2, double lr, double beta1,
                                                     double beta2, double adam_eps, int64_t step, int64_t seed, int64_t draw) {
  mgdm_step::check_vi_step_args(state, grad_v, eps, m, inv_sigma2, step);
  const int64_t B = state.size(1), P = state.size(2);
  auto like = state.select(0, 0);
  const c10::cuda::CUDAGuard guard(state.device());
  auto g = grad_v.contiguous(), e = eps.contiguous(), mc = m.contiguous(), is2 = inv_sigma2.contiguous();
  auto v_out = at::empty_like(like), e_out = at::empty_like(like);
  const mgdm_step::AdamCoef a = mgdm_step::adam_coef(lr, beta1, beta2, adam_eps, step);
  AT_DISPATCH_FLOATING_TYPES(state.scalar_type(), "mgdm_vi_step_cuda", [&] {
    check_launch(launch_mgdm_vi_step<scalar_t>(state.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(),
                                               mc.data_ptr<scalar_t>(), is2.data_ptr<scalar_t>(), B, P, a,
                                               static_cast<uint64_t>(seed), static_cast<uint32_t>(draw),
                                               v_out.data_ptr<scalar_t>(), e_out.data_ptr<scalar_t>(), current_stream()),
                 "mgdm_vi_step");
  });
  return {v_out, e_out};
}

at::Tensor mgdm_bridge_cuda(const at::Tensor& u, const at::Tensor& w, double cu, double cw, double std_, int64_t seed, int64_t draw) {
  mgdm_step::check_bridge_args(u, w);
  const c10::cuda::CUDAGuard guard(u.device());
  auto uc = u.contiguous(), wc = w.contiguous();
  auto out = at::empty_like(uc);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "mgdm_bridge_cuda", [&] {
    check_launch(launch_mgdm_bridge<scalar_t>(uc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                              uc.numel(), cu, cw, std_, static_cast<uint64_t>(seed),
                                              static_cast<uint32_t>(draw), current_stream()),
                 "mgdm_bridge");
  });
  return out;
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) {
  m.impl("mgdm_vi_step", &gmmkernels::mgdm_vi_step_cuda);
  m.impl("mgdm_bridge", &gmmkernels::mgdm_bridge_cuda);
}
