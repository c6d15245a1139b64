// ATen host side of mixture_em_stats on CUDA (kernels in mixture_em_stats_kernels.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cuda_utils.h"
#include "gmmkernels/mixture_em_stats_checks.h"
#include "gmmkernels/mixture_em_stats_iterate.h"
#include "gmmkernels/mixture_em_stats_launch.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_em_stats_cuda(
    const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec, const at::Tensor& logc, bool full,
    bool with_resp) {
  auto c = mixture_em_stats::prepare_block_call(x, means, prec, logc, full, with_resp, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_em_stats_cuda", [&] {
    check_launch(launch_mixture_em_stats<scalar_t>(
                     c.x.const_data_ptr<scalar_t>(), batch_stride(c.x), c.prec.const_data_ptr<scalar_t>(),
                     c.wmu.const_data_ptr<scalar_t>(), c.logc.const_data_ptr<scalar_t>(), c.lp.data_ptr<scalar_t>(),
                     c.rl.data_ptr<scalar_t>(), c.nk.data_ptr<scalar_t>(), c.sx.data_ptr<scalar_t>(),
                     c.sxx.data_ptr<scalar_t>(), with_resp ? c.resp.data_ptr<scalar_t>() : nullptr, c.z.B, c.z.N,
                     c.z.K, c.z.D, full, c.ws.data_ptr<scalar_t>(), current_stream()),
                 "mixture_em_stats");
  });
  return {c.lp, c.rl, c.nk, c.sx, c.sxx, c.resp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_em_mstep_cuda(
    const at::Tensor& nk, const at::Tensor& sx, const at::Tensor& sxx, int64_t cov_kind, double reg_covar) {
  namespace M = mixture_em_stats;
  const auto z = M::check_mstep_inputs(nk, sx, sxx, cov_kind, reg_covar, c10::DeviceType::CUDA);
  TORCH_CHECK(z.B < INT32_MAX, "mixture_em_mstep: too many mixtures in one CUDA call (B=", z.B, "); split the batch");
  const c10::cuda::CUDAGuard guard(nk.device());
  auto out = M::mstep_outputs(z, cov_kind, nk.options());
  auto& [logits, means, scale, prec, logc, ok] = out;
  auto nkc = nk.contiguous(), sxc = sx.contiguous(), sxxc = sxx.contiguous();
  AT_DISPATCH_FLOATING_TYPES(nk.scalar_type(), "mixture_em_mstep_cuda", [&] {
    check_launch(launch_mixture_em_mstep<scalar_t>(
                     nkc.const_data_ptr<scalar_t>(), sxc.const_data_ptr<scalar_t>(), sxxc.const_data_ptr<scalar_t>(),
                     logits.data_ptr<scalar_t>(), means.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
                     prec.data_ptr<scalar_t>(), logc.data_ptr<scalar_t>(), ok.data_ptr<bool>(), z.B, z.K, z.D,
                     static_cast<int>(cov_kind), static_cast<scalar_t>(reg_covar), current_stream()),
                 "mixture_em_mstep");
  });
  return out;
}

mixture_em_stats::Tensors8 mixture_em_iterate_cuda(const at::Tensor& x, const at::Tensor& logits,
                                                    const at::Tensor& means, const at::Tensor& scale,
                                                    const at::Tensor& prec, const at::Tensor& logc,
                                                    const at::Tensor& lower, int64_t cov_kind, double reg_covar,
                                                    double tol, int64_t max_iter, double n) {
  const c10::cuda::CUDAGuard guard(x.device());
  return mixture_em_stats::em_iterate(mixture_em_stats_cuda, mixture_em_mstep_cuda, x, logits, means, scale, prec,
                                      logc, lower, cov_kind, reg_covar, tol, max_iter, n, c10::DeviceType::CUDA);
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) {
  m.impl("mixture_em_stats", &gmmkernels::mixture_em_stats_cuda);
  m.impl("mixture_em_mstep", &gmmkernels::mixture_em_mstep_cuda);
  m.impl("mixture_em_iterate", &gmmkernels::mixture_em_iterate_cuda);
}
