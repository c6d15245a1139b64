// ATen host side of gibbs_sweep on CUDA (kernel in gibbs_sweep_kernels.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

#include "gmmkernels/gibbs_checks.h"

namespace gmmkernels {

template <typename T>
cudaError_t launch_gibbs_sweep(const T* x, int64_t x_bstride, const T* logw, const T* mu, const T* var, const T* m0, int32_t* z,
                               T* logw_o, T* mu_o, T* var_o, int64_t B, int64_t N, int64_t K, int64_t D, double alpha, double kappa0,
                               double a0, double b0, uint64_t seed, uint32_t step, cudaStream_t stream);

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gibbs_sweep_cuda(const at::Tensor& x, const at::Tensor& logw,
                                                                            const at::Tensor& means, const at::Tensor& var,
                                                                            const at::Tensor& m0, double alpha, double kappa0,
                                                                            double a0, double b0, int64_t seed, int64_t step) {
  gibbs::check_sweep_args(x, logw, means, var, m0, alpha, kappa0, a0, b0);
  const int64_t B = logw.size(0), K = logw.size(1), N = x.size(1), D = x.size(2);
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous(), lc = logw.contiguous(), mc = means.contiguous(), vc = var.contiguous(), m0c = m0.contiguous();
  auto z = at::empty({B, N}, x.options().dtype(at::kInt));
  auto lo = at::empty_like(lc), mo = at::empty_like(mc), vo = at::empty_like(vc);
  const int64_t xbs = x.size(0) == 1 ? 0 : N * D;
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gibbs_sweep_cuda", [&] {
    err = launch_gibbs_sweep<scalar_t>(xc.data_ptr<scalar_t>(), xbs, lc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(),
                                       vc.data_ptr<scalar_t>(), m0c.data_ptr<scalar_t>(), z.data_ptr<int32_t>(),
                                       lo.data_ptr<scalar_t>(), mo.data_ptr<scalar_t>(), vo.data_ptr<scalar_t>(), B, N, K, D, alpha,
                                       kappa0, a0, b0, static_cast<uint64_t>(seed), static_cast<uint32_t>(step),
                                       at::cuda::getCurrentCUDAStream().stream());
  });
  TORCH_CHECK(err == cudaSuccess, "gibbs_sweep: CUDA launch failed: ", cudaGetErrorString(err));
  return {z, lo, mo, vo};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) { m.impl("gibbs_sweep", &gmmkernels::gibbs_sweep_cuda); }
