// The CUDA kernels of mixture_em_stats (the block programs of gmmkernels/mixture_em_stats_blocks.h) run on CPU
// threads through HostLaunch (gmmkernels/block_program_host.h), as the private op _simt_mixture_em_stats: the same
// arguments and results as mixture_em_stats, for the tests on machines without a GPU. One std::thread per CUDA
// thread: meant for small problems only.
#include <torch/all.h>
#include <torch/library.h>

#include <cmath>
#include <stdexcept>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/block_program_host.h"
#include "gmmkernels/mixture_em_stats_blocks.h"
#include "gmmkernels/mixture_em_stats_checks.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_em_stats_simt(
    const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec, const at::Tensor& logc, bool full,
    bool with_resp) {
  auto c = mixture_em_stats::prepare_block_call(x, means, prec, logc, full, with_resp, c10::DeviceType::CPU);
  // what the kernels must write (outputs and workspace) starts as NaN, so that an element left unwritten shows
  for (auto* t : {&c.lp, &c.rl, &c.nk, &c.sx, &c.sxx, &c.resp, &c.ws}) t->fill_(NAN);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_simt_mixture_em_stats", [&] {
    try {
      mixture_em_stats::run_em_stats(HostLaunch{}, c.x.const_data_ptr<scalar_t>(), batch_stride(c.x),
                                     c.prec.const_data_ptr<scalar_t>(), c.wmu.const_data_ptr<scalar_t>(),
                                     c.logc.const_data_ptr<scalar_t>(), c.lp.data_ptr<scalar_t>(),
                                     c.rl.data_ptr<scalar_t>(), c.nk.data_ptr<scalar_t>(), c.sx.data_ptr<scalar_t>(),
                                     c.sxx.data_ptr<scalar_t>(), with_resp ? c.resp.data_ptr<scalar_t>() : nullptr,
                                     c.z.B, c.z.N, c.z.K, c.z.D, full, c.ws.data_ptr<scalar_t>());
    } catch (const std::runtime_error& e) {
      TORCH_CHECK(false, "_simt_mixture_em_stats: ", e.what());
    }
  });
  return {c.lp, c.rl, c.nk, c.sx, c.sxx, c.resp};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) { m.impl("_simt_mixture_em_stats", &gmmkernels::mixture_em_stats_simt); }
