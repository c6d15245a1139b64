// ATen host side of the fused MGDM steps on CUDA (kernels in mgdm_step_kernels.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>


#include "gmmkernels/mgdm.h"
#include "gmmkernels/mgdm_checks.h"

namespace gmmkernels {

template <typename T>
cudaError_t launch_mgdm_vi_step(T* state, const T* g, const T* eps, const T* m, const T* inv_s2, int64_t B, int64_t P,
                                const mgdm::AdamCoef& a, uint64_t seed, uint32_t draw, T* v_out, T* e_out, cudaStream_t stream);
template <typename T>
cudaError_t launch_mgdm_bridge(const T* u, const T* w, T* out, int64_t n, double cu, double cw, double sd, uint64_t seed, uint32_t draw,
                               cudaStream_t stream);

namespace {

std::tuple<at::Tensor, at::Tensor> mgdm_vi_step_cuda(at::Tensor& state, const at::Tensor& grad_v, const at::Tensor& eps,
                                                     const at::Tensor& m, const at::Tensor& inv_sigma2, double lr, double beta1,
                                                     double beta2, double adam_eps, int64_t step, int64_t seed, int64_t draw) {
  mgdm::check_vi_step_args(state, grad_v, eps, m, inv_sigma2, step);
  const int64_t B = state.size(1), P = state.size(2);
  auto like = state.select(0, 0);
  const c10::cuda::CUDAGuard guard(state.device());
  auto g = grad_v.contiguous(), e = eps.contiguous(), mc = m.contiguous(), is2 = inv_sigma2.contiguous();
  auto v_out = at::empty_like(like), e_out = at::empty_like(like);
  const mgdm::AdamCoef a = mgdm::adam_coef(lr, beta1, beta2, adam_eps, step);
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES(state.scalar_type(), "mgdm_vi_step_cuda", [&] {
    err = launch_mgdm_vi_step<scalar_t>(state.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(),
                                        is2.data_ptr<scalar_t>(), B, P, a, static_cast<uint64_t>(seed), static_cast<uint32_t>(draw),
                                        v_out.data_ptr<scalar_t>(), e_out.data_ptr<scalar_t>(), at::cuda::getCurrentCUDAStream().stream());
  });
  TORCH_CHECK(err == cudaSuccess, "mgdm_vi_step: CUDA launch failed: ", cudaGetErrorString(err));
  return {v_out, e_out};
}

at::Tensor mgdm_bridge_cuda(const at::Tensor& u, const at::Tensor& w, double cu, double cw, double std_, int64_t seed, int64_t draw) {
  mgdm::check_bridge_args(u, w);
  const c10::cuda::CUDAGuard guard(u.device());
  auto uc = u.contiguous(), wc = w.contiguous();
  auto out = at::empty_like(uc);
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "mgdm_bridge_cuda", [&] {
    err = launch_mgdm_bridge<scalar_t>(uc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), uc.numel(), cu, cw, std_,
                                       static_cast<uint64_t>(seed), static_cast<uint32_t>(draw), at::cuda::getCurrentCUDAStream().stream());
  });
  TORCH_CHECK(err == cudaSuccess, "mgdm_bridge: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) {
  m.impl("mgdm_vi_step", &gmmkernels::mgdm_vi_step_cuda);
  m.impl("mgdm_bridge", &gmmkernels::mgdm_bridge_cuda);
}
