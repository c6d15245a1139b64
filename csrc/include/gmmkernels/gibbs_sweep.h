// Per-element math of one Gibbs sweep for a conjugate Bayesian Gaussian mixture with diagonal
// covariances, shared by the CPU (csrc/cpu/gibbs_sweep.cpp) and CUDA (csrc/cuda/gibbs_sweep_kernels.cu)
// kernels so that both produce the same chains from the same seed (up to floating-point rounding).
//
// Model, per chain and per data dimension d:
//   w ~ Dirichlet(alpha 1_K);  var_kd ~ InvGamma(a0, b0);  mu_kd | var_kd ~ N(m0_d, var_kd / kappa0)
//   z_n ~ Cat(w);  x_nd | z_n = k ~ N(mu_kd, var_kd)
// One sweep: z | (w, mu, var), then (w, mu, var) | z, x from the conjugate posteriors.
// Random-number streams (rng.h): assignment of point n in chain b: index b*N+n, tag 1; Dirichlet gamma of
// (b, k): index b*K+k, tag 2; (var, mu) of (b, k, d): index (b*K+k)*D+d, tag 3. step = the sweep number.
#pragma once
#include "gmmkernels/common.h"
#include "gmmkernels/rng.h"

namespace gmmkernels {
namespace gibbs_sweep {

constexpr uint32_t kTagAssign = 1, kTagWeight = 2, kTagParam = 3;
constexpr double kLog2Pi = 1.8378770664093453;

// Log-joint of point x (stride 1, D values) under component k, without the common -D/2 log(2 pi).
template <typename T, typename Acc>
GMMK_HD Acc component_logit(const T* x, int D, Acc logc_k, const T* mu_k, const Acc* ivar_k) {
  Acc q = 0;
  for (int d = 0; d < D; ++d) {
    const Acc r = static_cast<Acc>(x[d]) - static_cast<Acc>(mu_k[d]);
    q += r * r * ivar_k[d];
  }
  return logc_k - Acc(0.5) * q;
}

// Categorical draw with one uniform: online log-sum-exp pass, then a running-CDF pass (no K-sized store).
// logc [K], ivar [K*D] precomputed per chain; mu [K*D].
template <typename T, typename Acc>
GMMK_HD int draw_assignment(const T* x, int D, int K, const Acc* logc, const T* mu, const Acc* ivar, double u) {
  Acc m = -INFINITY, s = 0;
  for (int k = 0; k < K; ++k) {
    const Acc l = component_logit<T, Acc>(x, D, logc[k], mu + (int64_t)k * D, ivar + (int64_t)k * D);
    if (l > m) {
      s = s * exp(m - l) + Acc(1);
      m = l;
    } else {
      s += exp(l - m);
    }
  }
  const Acc target = static_cast<Acc>(u) * s;
  Acc c = 0;
  int last = 0;
  for (int k = 0; k < K; ++k) {
    const Acc l = component_logit<T, Acc>(x, D, logc[k], mu + (int64_t)k * D, ivar + (int64_t)k * D);
    const Acc p = exp(l - m);
    if (p > 0) last = k;
    c += p;
    if (c > target) return k;
  }
  return last;  // rounding left target above the last partial sum
}

// Conjugate Normal-Inverse-Gamma draw of (mu, var) for one (chain, component, dim) from its statistics
// n = N_k, s1 = sum x, s2 = sum x^2 over the points assigned to k.
GMMK_HD void draw_param(double n, double s1, double s2, double m0, double kappa0, double a0, double b0,
                        rng::Stream& st, double* mu_out, double* var_out) {
  const double kn = kappa0 + n;
  const double mn = (kappa0 * m0 + s1) / kn;
  const double an = a0 + 0.5 * n;
  double bn = b0;
  if (n > 0) {
    const double xbar = s1 / n;
    double ss = s2 - n * xbar * xbar;
    if (ss < 0) ss = 0;
    const double dm = xbar - m0;
    bn += 0.5 * ss + 0.5 * kappa0 * n * dm * dm / kn;
  }
  const double var = bn / st.gamma(an);
  *var_out = var;
  *mu_out = mn + sqrt(var / kn) * st.normal();
}

}  // namespace gibbs_sweep
}  // namespace gmmkernels
