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
  const auto z = mixture_em_stats::check_inputs(x, means, prec, logc, full, c10::DeviceType::CUDA);
  const int64_t B = z.B, N = z.N, K = z.K, D = z.D;
  const int64_t maxD = full ? kEMStatsMaxFullD : kEMStatsMaxDiagD;
  TORCH_CHECK(D <= maxD, "mixture_em_stats: D=", D, " exceeds the ", maxD, " dimensions of the fused CUDA kernel for ",
              full ? "full" : "diagonal", " covariances; use mixture_stats with responsibilities and mixture_suffstats "
              "(gmmkernels.fit_em / fit_vb switch to them by themselves)");
  TORCH_CHECK(N < INT32_MAX && K < INT32_MAX && B <= 65535, "mixture_em_stats: sizes too large for one CUDA call (B=", B,
              ", N=", N, ", K=", K, "); split the batch");
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous(), mc = means.contiguous(), pc = prec.contiguous(), cc = logc.contiguous();
  // W mu (the lower triangle of a full W): one small product per component, in ATen
  auto wmu = (full ? at::matmul(at::tril(pc), mc.unsqueeze(-1)).squeeze(-1) : pc * mc).contiguous();
  const auto opt = x.options();
  auto lp = at::empty({B}, opt), rl = at::empty({B}, opt), nk = at::empty({B, K}, opt);
  auto sx = at::empty({B, K, D}, opt);
  auto sxx = full ? at::empty({B, K, D, D}, opt) : at::empty({B, K, D}, opt);
  auto resp = optional_output(with_resp, {B, N, K}, opt);
  auto ws = at::empty({std::max<int64_t>(1, mixture_em_stats_workspace(B, N, K, D, full))}, opt);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_em_stats_cuda", [&] {
    check_launch(launch_mixture_em_stats<scalar_t>(
                     xc.const_data_ptr<scalar_t>(), batch_stride(xc), pc.const_data_ptr<scalar_t>(),
                     wmu.const_data_ptr<scalar_t>(), cc.const_data_ptr<scalar_t>(), lp.data_ptr<scalar_t>(),
                     rl.data_ptr<scalar_t>(), nk.data_ptr<scalar_t>(), sx.data_ptr<scalar_t>(), sxx.data_ptr<scalar_t>(),
                     with_resp ? resp.data_ptr<scalar_t>() : nullptr, B, N, K, D, full, ws.data_ptr<scalar_t>(),
                     current_stream()),
                 "mixture_em_stats");
  });
  return {lp, rl, nk, sx, sxx, resp};
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
