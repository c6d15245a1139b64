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
  auto c = mixture_suffstats::prepare_block_call(x, resp, full, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_suffstats_cuda", [&] {
    check_launch(launch_mixture_suffstats<scalar_t>(
                     c.x.const_data_ptr<scalar_t>(), c.r.const_data_ptr<scalar_t>(), c.nk.data_ptr<scalar_t>(),
                     c.sx.data_ptr<scalar_t>(), c.sxx.data_ptr<scalar_t>(), c.z.B, c.z.N, c.z.K, c.z.D,
                     batch_stride(c.x), full, full ? c.tmp.data_ptr<scalar_t>() : nullptr,
                     c.ws.defined() ? c.ws.data_ptr<scalar_t>() : nullptr, current_stream()),
                 "mixture_suffstats");
  });
  return {c.nk, c.sx, c.sxx};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) { m.impl("mixture_suffstats", &gmmkernels::mixture_suffstats_cuda); }
