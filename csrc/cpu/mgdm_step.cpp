// Fused elementwise MGDM steps on CPU (math in csrc/include/gmmkernels/mgdm_step.h):
//   mgdm_vi_step: Gauss_VI gradient + Adam update of (mu, rho) + next reparameterised sample, in place on `state`.
//   mgdm_bridge:  cu * u + cw * w + std * z (the DDPM/DDIM bridge draw), z counter-based.
// The normals come 16 at a time from rng::normals_block (rng_block.h), which the compiler vectorises.
#include <ATen/Parallel.h>
#include <torch/all.h>
#include <torch/library.h>

#include "gmmkernels/mgdm_step.h"
#include "gmmkernels/mgdm_step_checks.h"
#include "gmmkernels/rng_block.h"

namespace gmmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor> mgdm_vi_step_cpu(at::Tensor& state, const at::Tensor& grad_v, const at::Tensor& eps,
                                                    const at::Tensor& m, const at::Tensor& inv_sigma2, double lr, double beta1,
                                                    double beta2, double adam_eps, int64_t step, int64_t seed, int64_t draw) {
  mgdm_step::check_vi_step_args(state, grad_v, eps, m, inv_sigma2, step);
  const int64_t B = state.size(1), P = state.size(2);
  auto like = state.select(0, 0);
  auto g = grad_v.contiguous(), e = eps.contiguous(), mc = m.contiguous(), is2 = inv_sigma2.contiguous();
  auto v_out = at::empty_like(like), e_out = at::empty_like(like);
  const mgdm_step::AdamCoef a = mgdm_step::adam_coef(lr, beta1, beta2, adam_eps, step);
  const int64_t n = B * P;
  AT_DISPATCH_FLOATING_TYPES(state.scalar_type(), "mgdm_vi_step_cpu", [&] {
    scalar_t* s = state.data_ptr<scalar_t>();
    const scalar_t *gp = g.data_ptr<scalar_t>(), *ep = e.data_ptr<scalar_t>(), *mp = mc.data_ptr<scalar_t>(),
                   *ip = is2.data_ptr<scalar_t>();
    scalar_t *vo = v_out.data_ptr<scalar_t>(), *eo = e_out.data_ptr<scalar_t>();
    at::parallel_for(0, n, 2048, [&](int64_t lo, int64_t hi) {
      double z[rng::kBlock];
      for (int64_t i0 = lo; i0 < hi; i0 += rng::kBlock) {
        const int nb = static_cast<int>(std::min<int64_t>(rng::kBlock, hi - i0));
        rng::normals_block(static_cast<uint64_t>(seed), static_cast<uint64_t>(i0), static_cast<uint32_t>(draw),
                           mgdm_step::kTagVI, nb, z);
        for (int l = 0; l < nb; ++l) {
          const int64_t i = i0 + l;
          mgdm_step::vi_update<scalar_t>(s + i, s + n + i, s + 2 * n + i, s + 3 * n + i, s + 4 * n + i, s + 5 * n + i,
                                         gp[i], ep[i], mp[i], ip[i / P], a, z[l], vo + i, eo + i);
        }
      }
    });
  });
  return {v_out, e_out};
}

at::Tensor mgdm_bridge_cpu(const at::Tensor& u, const at::Tensor& w, double cu, double cw, double std_, int64_t seed, int64_t draw) {
  mgdm_step::check_bridge_args(u, w);
  auto uc = u.contiguous(), wc = w.contiguous();
  auto out = at::empty_like(uc);
  const int64_t n = uc.numel();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "mgdm_bridge_cpu", [&] {
    const scalar_t *up = uc.data_ptr<scalar_t>(), *wp = wc.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, 4096, [&](int64_t lo, int64_t hi) {
      double z[rng::kBlock] = {};
      for (int64_t i0 = lo; i0 < hi; i0 += rng::kBlock) {
        const int nb = static_cast<int>(std::min<int64_t>(rng::kBlock, hi - i0));
        if (std_ != 0)
          rng::normals_block(static_cast<uint64_t>(seed), static_cast<uint64_t>(i0), static_cast<uint32_t>(draw),
                             mgdm_step::kTagBridge, nb, z);
        for (int l = 0; l < nb; ++l) {
          const int64_t i = i0 + l;
          op[i] = static_cast<scalar_t>(cu * static_cast<double>(up[i]) + cw * static_cast<double>(wp[i]) + std_ * z[l]);
        }
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) {
  m.impl("mgdm_vi_step", &gmmkernels::mgdm_vi_step_cpu);
  m.impl("mgdm_bridge", &gmmkernels::mgdm_bridge_cpu);
}
