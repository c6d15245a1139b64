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
  gibbs_sweep::check_sweep_args(x, logw, means, var, m0, alpha, kappa0, a0, b0);
  TORCH_CHECK(chain0 >= 0, "gibbs_sweep: chain0 must be >= 0, got ", chain0);
  const int64_t B = logw.size(0), K = logw.size(1), N = x.size(1), D = x.size(2);
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous(), lc = logw.contiguous(), mc = means.contiguous(), vc = var.contiguous(), m0c = m0.contiguous();
  auto z = at::empty({B, N}, x.options().dtype(at::kInt));
  auto lo = at::empty_like(lc), mo = at::empty_like(mc), vo = at::empty_like(vc);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gibbs_sweep_cuda", [&] {
    check_launch(launch_gibbs_sweep<scalar_t>(xc.data_ptr<scalar_t>(), batch_stride(xc), lc.data_ptr<scalar_t>(),
                                              mc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(), m0c.data_ptr<scalar_t>(),
                                              z.data_ptr<int32_t>(), lo.data_ptr<scalar_t>(), mo.data_ptr<scalar_t>(),
                                              vo.data_ptr<scalar_t>(), B, N, K, D, alpha, kappa0, a0, b0,
                                              static_cast<uint64_t>(seed), static_cast<uint32_t>(step),
                                              static_cast<uint64_t>(chain0), current_stream()),
                 "gibbs_sweep");
  });
  return {z, lo, mo, vo};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) { m.impl("gibbs_sweep", &gmmkernels::gibbs_sweep_cuda); }
