// gibbs_sweep on CPU: one Gibbs sweep of B independent chains of a conjugate Bayesian Gaussian mixture
// (diagonal covariances; model and random streams in csrc/include/gmmkernels/gibbs_sweep.h). Chains run in
// parallel; within a chain every sum is taken in the order n = 0..N-1, so results do not depend on threads.
#include <ATen/Parallel.h>
#include <torch/all.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/gibbs_sweep.h"
#include "gmmkernels/gibbs_sweep_checks.h"

namespace gmmkernels {
namespace {

template <typename scalar_t>
void gibbs_impl(const scalar_t* x, int64_t x_bstride, const scalar_t* logw, const scalar_t* mu, const scalar_t* var,
                const scalar_t* m0, int32_t* z, scalar_t* logw_o, scalar_t* mu_o, scalar_t* var_o, int64_t B, int64_t N,
                int64_t K, int64_t D, double alpha, double kappa0, double a0, double b0, uint64_t seed, uint32_t step,
                uint64_t chain0) {
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> logc(K), ivar(K * D), s1(K * D), s2(K * D), nk(K), g(K);
    for (int64_t b = begin; b < end; ++b) {
      const uint64_t gb = chain0 + static_cast<uint64_t>(b);  // the chain's index in the whole run
      const scalar_t* mub = mu + b * K * D;
      for (int64_t k = 0; k < K; ++k) {
        double ld = 0;
        for (int64_t d = 0; d < D; ++d) {
          const double v = static_cast<double>(var[(b * K + k) * D + d]);
          ivar[k * D + d] = 1.0 / v;
          ld += std::log(v);
        }
        logc[k] = static_cast<double>(logw[b * K + k]) - 0.5 * ld;
      }
      std::fill(s1.begin(), s1.end(), 0.0);
      std::fill(s2.begin(), s2.end(), 0.0);
      std::fill(nk.begin(), nk.end(), 0.0);
      const scalar_t* xb = x + b * x_bstride;
      for (int64_t n = 0; n < N; ++n) {
        rng::Stream st(seed, gb * N + n, step, gibbs_sweep::kTagAssign);
        const scalar_t* xn = xb + n * D;
        const int k = gibbs_sweep::draw_assignment<scalar_t, double>(xn, (int)D, (int)K, logc.data(), mub, ivar.data(),
                                                                     st.uniform());
        z[b * N + n] = k;
        nk[k] += 1.0;
        for (int64_t d = 0; d < D; ++d) {
          const double v = static_cast<double>(xn[d]);
          s1[k * D + d] += v;
          s2[k * D + d] += v * v;
        }
      }
      double gs = 0;
      for (int64_t k = 0; k < K; ++k) {
        rng::Stream st(seed, gb * K + k, step, gibbs_sweep::kTagWeight);
        g[k] = st.gamma(alpha + nk[k]);
        gs += g[k];
      }
      for (int64_t k = 0; k < K; ++k) logw_o[b * K + k] = static_cast<scalar_t>(std::log(g[k]) - std::log(gs));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t d = 0; d < D; ++d) {
          rng::Stream st(seed, (gb * K + k) * D + d, step, gibbs_sweep::kTagParam);
          double m, v;
          gibbs_sweep::draw_param(nk[k], s1[k * D + d], s2[k * D + d], static_cast<double>(m0[d]), kappa0, a0, b0, st, &m,
                                  &v);
          mu_o[(b * K + k) * D + d] = static_cast<scalar_t>(m);
          var_o[(b * K + k) * D + d] = static_cast<scalar_t>(v);
        }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gibbs_sweep_cpu(const at::Tensor& x, const at::Tensor& logw,
                                                                           const at::Tensor& means, const at::Tensor& var,
                                                                           const at::Tensor& m0, double alpha, double kappa0,
                                                                           double a0, double b0, int64_t seed, int64_t step,
                                                                           int64_t chain0) {
  gibbs_sweep::check_sweep_args(x, logw, means, var, m0, alpha, kappa0, a0, b0);
  TORCH_CHECK(chain0 >= 0, "gibbs_sweep: chain0 must be >= 0, got ", chain0);
  const int64_t B = logw.size(0), K = logw.size(1), N = x.size(1), D = x.size(2);
  auto xc = x.contiguous(), lc = logw.contiguous(), mc = means.contiguous(), vc = var.contiguous(), m0c = m0.contiguous();
  auto z = at::empty({B, N}, x.options().dtype(at::kInt));
  auto lo = at::empty_like(lc), mo = at::empty_like(mc), vo = at::empty_like(vc);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gibbs_sweep_cpu", [&] {
    gibbs_impl<scalar_t>(xc.data_ptr<scalar_t>(), batch_stride(xc), lc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(),
                         vc.data_ptr<scalar_t>(), m0c.data_ptr<scalar_t>(), z.data_ptr<int32_t>(), lo.data_ptr<scalar_t>(),
                         mo.data_ptr<scalar_t>(), vo.data_ptr<scalar_t>(), B, N, K, D, alpha, kappa0, a0, b0,
                         static_cast<uint64_t>(seed), static_cast<uint32_t>(step), static_cast<uint64_t>(chain0));
  });
  return {z, lo, mo, vo};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) { m.impl("gibbs_sweep", &gmmkernels::gibbs_sweep_cpu); }
