// Per-element math of the fused MGDM steps, shared by the CPU and CUDA kernels (docs/kernels.md (mgdm_step); the
// method, with its Gauss_VI step and bridge draw: docs/methods.md (MGDM)).
//
// Gauss_VI step: variational family N(mu, diag(exp(2 rho))), prior N(m, sigma2), sample v = mu + exp(rho) eps.
// With gamma = -grad_v log_pot(D_s(v)) (from the VJP) and delta = (v - m) / sigma2:
//   g_mu = gamma + delta,   g_rho = (gamma + delta) * exp(rho) * eps - 1,
// then one Adam step (torch.optim.Adam arithmetic, bias-corrected, no weight decay) on (mu, rho) and a fresh
// reparameterised sample v' = mu' + exp(rho') eps' with eps' from the counter-based stream (tag 5).
// Bridge draw: out = cu * u + cw * w + std * z, z from the counter-based stream (tag 4).
#pragma once
#include <cmath>
#include <cstdint>

#include "gmmkernels/common.h"
#include "gmmkernels/rng.h"

namespace gmmkernels {
namespace mgdm_step {

constexpr uint32_t kTagBridge = 4, kTagVI = 5;

struct AdamCoef {
  double lr, beta1, beta2, eps, bc1, bc2_sqrt;  // bc1 = 1 - beta1^t, bc2_sqrt = sqrt(1 - beta2^t)
};

// The coefficients of Adam step number `step` (counted from 1), as torch.optim.Adam computes them (host side).
inline AdamCoef adam_coef(double lr, double beta1, double beta2, double eps, int64_t step) {
  return AdamCoef{lr, beta1, beta2, eps, 1.0 - std::pow(beta1, (double)step), std::sqrt(1.0 - std::pow(beta2, (double)step))};
}

// state: pointers to this element's mu, rho, m_mu, m_rho, v_mu, v_rho (updated in place).
template <typename T>
GMMK_HD void vi_update(T* mu, T* rho, T* m_mu, T* m_rho, T* v_mu, T* v_rho, T gamma, T eps, T m, T inv_sigma2,
                       const AdamCoef& a, double z_next, T* v_out, T* eps_out) {
  using A = double;
  const A e_rho = exp(static_cast<A>(*rho));
  const A v = static_cast<A>(*mu) + e_rho * static_cast<A>(eps);
  const A g = static_cast<A>(gamma) + (v - static_cast<A>(m)) * static_cast<A>(inv_sigma2);
  const A g_mu = g;
  const A g_rho = g * e_rho * static_cast<A>(eps) - 1.0;
  const A mm = a.beta1 * static_cast<A>(*m_mu) + (1.0 - a.beta1) * g_mu;
  const A mr = a.beta1 * static_cast<A>(*m_rho) + (1.0 - a.beta1) * g_rho;
  const A vm = a.beta2 * static_cast<A>(*v_mu) + (1.0 - a.beta2) * g_mu * g_mu;
  const A vr = a.beta2 * static_cast<A>(*v_rho) + (1.0 - a.beta2) * g_rho * g_rho;
  const A step = a.lr / a.bc1;
  const A new_mu = static_cast<A>(*mu) - step * mm / (sqrt(vm) / a.bc2_sqrt + a.eps);
  const A new_rho = static_cast<A>(*rho) - step * mr / (sqrt(vr) / a.bc2_sqrt + a.eps);
  *mu = static_cast<T>(new_mu);
  *rho = static_cast<T>(new_rho);
  *m_mu = static_cast<T>(mm);
  *m_rho = static_cast<T>(mr);
  *v_mu = static_cast<T>(vm);
  *v_rho = static_cast<T>(vr);
  *eps_out = static_cast<T>(z_next);
  *v_out = static_cast<T>(new_mu + exp(new_rho) * z_next);
}

}  // namespace mgdm_step
}  // namespace gmmkernels
