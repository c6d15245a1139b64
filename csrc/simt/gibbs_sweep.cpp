// The CUDA kernels of gibbs_sweep (the block programs of gmmkernels/gibbs_sweep_blocks.h) run on CPU threads through
// HostLaunch (gmmkernels/block_program_host.h), as the private op _simt_gibbs_sweep: the same arguments and results
// as gibbs_sweep, for the tests on machines without a GPU. One std::thread per CUDA thread: meant for small problems.
#include <torch/all.h>
#include <torch/library.h>

#include <cmath>
#include <stdexcept>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/block_program_host.h"
#include "gmmkernels/gibbs_sweep_blocks.h"
#include "gmmkernels/gibbs_sweep_checks.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gibbs_sweep_simt(const at::Tensor& x, const at::Tensor& logw,
                                                                            const at::Tensor& means, const at::Tensor& var,
                                                                            const at::Tensor& m0, double alpha,
                                                                            double kappa0, double a0, double b0,
                                                                            int64_t seed, int64_t step, int64_t chain0) {
  auto c = gibbs_sweep::prepare_block_call(x, logw, means, var, m0, alpha, kappa0, a0, b0, chain0);
  // what the kernels must write starts as garbage that shows: -1 (no component) and NaN
  c.z.fill_(-1);
  for (auto* t : {&c.logw_o, &c.mu_o, &c.var_o}) t->fill_(NAN);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_simt_gibbs_sweep", [&] {
    try {
      const gibbs_sweep::SweepParams<scalar_t> p{
          c.x.const_data_ptr<scalar_t>(), batch_stride(c.x), c.logw.const_data_ptr<scalar_t>(),
          c.means.const_data_ptr<scalar_t>(), c.var.const_data_ptr<scalar_t>(), c.m0.const_data_ptr<scalar_t>(),
          c.z.data_ptr<int32_t>(), c.logw_o.data_ptr<scalar_t>(), c.mu_o.data_ptr<scalar_t>(),
          c.var_o.data_ptr<scalar_t>(), c.B, (int)c.N, (int)c.K, (int)c.D, alpha, kappa0, a0, b0,
          static_cast<uint64_t>(seed), static_cast<uint32_t>(step), static_cast<uint64_t>(chain0)};
      gibbs_sweep::run_gibbs_sweep(HostLaunch{}, p);
    } catch (const std::runtime_error& e) {
      TORCH_CHECK(false, "_simt_gibbs_sweep: ", e.what());
    }
  });
  return {c.z, c.logw_o, c.mu_o, c.var_o};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) { m.impl("_simt_gibbs_sweep", &gmmkernels::gibbs_sweep_simt); }
