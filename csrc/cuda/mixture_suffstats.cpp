// ATen host side of mixture_suffstats on CUDA (kernels in mixture_suffstats_kernels.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cuda_utils.h"
#include "gmmkernels/mixture_suffstats_checks.h"
#include "gmmkernels/mixture_suffstats_launch.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_suffstats_cuda(const at::Tensor& x, const at::Tensor& resp, bool full) {
  const auto s = mixture_suffstats::check_inputs(x, resp);
  TORCH_CHECK(x.is_cuda() && resp.device() == x.device(), "mixture_suffstats: x and resp must be on one CUDA device");
  const int64_t B = s.B, N = s.N, K = s.K, D = s.D;
  // int32 row indices in the kernels, and chunks rounded up to a multiple of 64 rows
  TORCH_CHECK(N < INT32_MAX - 64 && K < INT32_MAX && D < INT32_MAX, "mixture_suffstats: sizes too large for CUDA (N=", N,
              ", K=", K, ", D=", D, ")");
  int64_t chunk = 0;
  const int64_t Sd = mixture_suffstats_splits(B, N, K, D, false, &chunk);
  TORCH_CHECK(B * Sd <= 65535 && (K + 31) / 32 <= 65535,
              "mixture_suffstats: too many mixtures or components in one call on CUDA (B=", B, ", K=", K, "); split the batch");
  if (full && D > 0) {
    const int64_t Sf = mixture_suffstats_splits(B, N, K, D, true, &chunk);
    TORCH_CHECK(B * K * Sf <= INT32_MAX && (D + 15) / 16 <= 65535,
                "mixture_suffstats: full second moments too large for one CUDA launch (B=", B, ", K=", K, ", D=", D, ")");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous(), rc = resp.contiguous();
  auto nk = at::empty({B, K}, x.options());
  auto sx = at::empty({B, K, D}, x.options());
  auto sxx = full ? at::empty({B, K, D, D}, x.options()) : at::empty({B, K, D}, x.options());
  auto tmp = full ? at::empty({B, K, D}, x.options()) : at::Tensor();
  const int64_t ws_numel = mixture_suffstats_workspace(B, N, K, D, full);
  auto ws = ws_numel > 0 ? at::empty({ws_numel}, x.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_suffstats_cuda", [&] {
    check_launch(launch_mixture_suffstats<scalar_t>(xc.data_ptr<scalar_t>(), rc.data_ptr<scalar_t>(), nk.data_ptr<scalar_t>(),
                                                    sx.data_ptr<scalar_t>(), sxx.data_ptr<scalar_t>(), B, N, K, D,
                                                    batch_stride(xc), full, full ? tmp.data_ptr<scalar_t>() : nullptr,
                                                    ws_numel > 0 ? ws.data_ptr<scalar_t>() : nullptr, current_stream()),
                 "mixture_suffstats");
  });
  return {nk, sx, sxx};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) { m.impl("mixture_suffstats", &gmmkernels::mixture_suffstats_cuda); }
