// ATen host side of gibbs_sweep on CUDA (kernel in gibbs_sweep_kernels.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cuda_utils.h"
#include "gmmkernels/gibbs_sweep_checks.h"
#include "gmmkernels/gibbs_sweep_launch.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gibbs_sweep_cuda(const at::Tensor& x, const at::Tensor& logw,
                                                                            const at::Tensor& means, const at::Tensor& var,
                                                                            const at::Tensor& m0, double alpha, double kappa0,
                                                                            double a0, double b0, int64_t seed, int64_t step,
                                                                            int64_t chain0) {
  auto c = gibbs_sweep::prepare_block_call(x, logw, means, var, m0, alpha, kappa0, a0, b0, chain0);
  const c10::cuda::CUDAGuard guard(x.device());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gibbs_sweep_cuda", [&] {
    check_launch(launch_gibbs_sweep<scalar_t>(
                     c.x.const_data_ptr<scalar_t>(), batch_stride(c.x), c.logw.const_data_ptr<scalar_t>(),
                     c.means.const_data_ptr<scalar_t>(), c.var.const_data_ptr<scalar_t>(),
                     c.m0.const_data_ptr<scalar_t>(), c.z.data_ptr<int32_t>(), c.logw_o.data_ptr<scalar_t>(),
                     c.mu_o.data_ptr<scalar_t>(), c.var_o.data_ptr<scalar_t>(), c.B, c.N, c.K, c.D, alpha, kappa0,
                     a0, b0, static_cast<uint64_t>(seed), static_cast<uint32_t>(step), static_cast<uint64_t>(chain0),
                     current_stream()),
                 "gibbs_sweep");
  });
  return {c.z, c.logw_o, c.mu_o, c.var_o};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) { m.impl("gibbs_sweep", &gmmkernels::gibbs_sweep_cuda); }
