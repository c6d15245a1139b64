// The CUDA kernels of mixture_suffstats (the block programs of gmmkernels/mixture_suffstats_blocks.h) run on CPU
// threads through HostLaunch (gmmkernels/block_program_host.h), as the private op _simt_mixture_suffstats: the same
// arguments and results as mixture_suffstats, for the tests on machines without a GPU. One std::thread per CUDA
// thread: meant for small problems.
#include <torch/all.h>
#include <torch/library.h>

#include <cmath>
#include <stdexcept>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/block_program_host.h"
#include "gmmkernels/mixture_suffstats_blocks.h"
#include "gmmkernels/mixture_suffstats_checks.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_suffstats_simt(const at::Tensor& x, const at::Tensor& resp,
                                                                      bool full) {
  auto c = mixture_suffstats::prepare_block_call(x, resp, full, c10::DeviceType::CPU);
  // what the kernels must write (outputs, scratch and workspace) starts as NaN, so that an element left unwritten shows
  for (auto* t : {&c.nk, &c.sx, &c.sxx, &c.tmp, &c.ws})
    if (t->defined()) t->fill_(NAN);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_simt_mixture_suffstats", [&] {
    try {
      mixture_suffstats::run_suffstats(HostLaunch{}, c.x.const_data_ptr<scalar_t>(), c.r.const_data_ptr<scalar_t>(),
                                       c.nk.data_ptr<scalar_t>(), c.sx.data_ptr<scalar_t>(), c.sxx.data_ptr<scalar_t>(),
                                       c.z.B, c.z.N, c.z.K, c.z.D, batch_stride(c.x), full,
                                       full ? c.tmp.data_ptr<scalar_t>() : nullptr,
                                       c.ws.defined() ? c.ws.data_ptr<scalar_t>() : nullptr);
    } catch (const std::runtime_error& e) {
      TORCH_CHECK(false, "_simt_mixture_suffstats: ", e.what());
    }
  });
  return {c.nk, c.sx, c.sxx};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) { m.impl("_simt_mixture_suffstats", &gmmkernels::mixture_suffstats_simt); }
