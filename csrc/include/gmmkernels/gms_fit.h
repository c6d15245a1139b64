// Per-element math of the GMS (Gaussian Mixture Solvers, arXiv 2311.00941) fit and step, shared by the CPU
// (csrc/cpu/gms_fit.cpp) and CUDA (csrc/cuda/gms_fit_kernels.cu) kernels; the Python reference of every
// formula is gmmkernels/gms_reference.py and the documentation is in gmmkernels/gms.py.
//
// Model per element: x ~ w N(mu1, v) + (1 - w) N(mu2, v), fitted to the mean M1, variance V and raw third
// moment M3 of the element.
//   closed form: m3c = M3 - 3 M1 V - M1^3, delta = cbrt(m3c / (w(1-w)(1-2w))), v = V - w(1-w) delta^2,
//                mu1 = M1 + (1-w) delta, mu2 = M1 - w delta; if v < floor V: v = floor V and
//                |delta| = sqrt((V - v) / (w(1-w))) (sign kept). Computed in double.
//   adan:        the official solver (sample.py::solve_gmm): theta = (mu1, mu2, beta), v = V clamp(beta, 0.1, 1.2),
//                J = mean(g0^2 + g1^2 + g2^2) over n_el elements, Adan(lr, betas (0.9, 0.92, 0.92), eps 1e-8).
// Random streams (rng.h): component uniform at index (image or element), tag 6; the normal at index element, tag 7;
// step word = the caller's offset.
#pragma once
#include <cmath>
#include <cstdint>

#include "gmmkernels/common.h"
#include "gmmkernels/rng.h"

namespace gmmkernels {
namespace gms_fit {

using std::cbrt;
using std::copysign;
using std::fabs;
using std::isfinite;
using std::isnan;
using std::sqrt;

constexpr uint32_t kTagComponent = 6, kTagNoise = 7;
constexpr int kClosed = 0, kAdan = 1, kGaussian = 2;
constexpr double kBeta1 = 0.9, kBeta2 = 0.92, kBeta3 = 0.92, kAdanEps = 1e-8;
constexpr double kBetaMin = 0.1, kBetaMax = 1.2, kBetaInit = 0.998, kMu2Offset = 1e-3;

struct Fit {
  double mu1, mu2, v;
};

// Exact method-of-moments solution with the documented fallbacks (see gmmkernels/gms.py::gms_fit).
GMMK_HD Fit closed_fit(double M1, double V, double M3, double w, double floor_frac) {
  const double nan = NAN;
  if (isnan(M3) || !isfinite(M1) || !isfinite(V)) return Fit{nan, nan, nan};
  V = V > 0.0 ? V : 0.0;
  const double q = 1.0 - w, pq = w * q, c = pq * (q - w);
  const double m3c = M3 - M1 * (3.0 * V + M1 * M1);
  double delta;
  if (m3c == 0.0) {
    delta = 0.0;
  } else if (c == 0.0) {
    delta = copysign(INFINITY, m3c);  // w = 1/2: no finite split gives skew; take the limit (the floor below)
  } else {
    delta = cbrt(m3c / c);
  }
  double v = V - pq * delta * delta;
  const double vmin = floor_frac * V;
  if (!(v >= vmin)) {  // also catches v = -inf / NaN from an infinite delta
    v = vmin;
    delta = copysign(sqrt((V - v) / pq), delta);
  }
  return Fit{M1 + q * delta, M1 - w * delta, v};
}

// The gradient scale of the Adan objective J: 2 / n_el, where n_el = 0 means the number n of fitted elements.
inline double adan_scale(int64_t n_el, int64_t n) {
  return 2.0 / (n_el > 0 ? static_cast<double>(n_el) : static_cast<double>(n > 0 ? n : 1));
}

// Adan step sizes of iteration k (1-based), from running powers of the betas (the official code uses beta**k).
struct AdanSchedule {
  double b1k = 1.0, b2k = 1.0, b3k = 1.0;
  double c1 = 0, c2 = 0, s3 = 0;  // lr / (1 - b1^k), lr b2 / (1 - b2^k), sqrt(1 - b3^k)
  GMMK_HD void next(double lr) {
    b1k *= kBeta1;
    b2k *= kBeta2;
    b3k *= kBeta3;
    c1 = lr / (1.0 - b1k);
    c2 = lr * kBeta2 / (1.0 - b2k);
    s3 = sqrt(1.0 - b3k);
  }
};

// Gradient of J with respect to (mu1, mu2, beta) for one element; scale = 2 / n_el.
template <typename T>
GMMK_HD void objective_grad(T w, T M1, T V, T M3, T mu1, T mu2, T beta, T scale, T* g_mu1, T* g_mu2, T* g_beta) {
  const T q = T(1) - w;
  const T lo = T(kBetaMin), hi = T(kBetaMax);
  const T bc = beta < lo ? lo : (beta > hi ? hi : beta);
  const T inside = (beta >= lo && beta <= hi) ? T(1) : T(0);
  const T v = V * bc;
  const T r0 = w * mu1 + q * mu2 - M1;
  const T r1 = w * (mu1 * mu1 + v) + q * (mu2 * mu2 + v) - (M1 * M1 + V);
  const T r2 = w * (mu1 * mu1 * mu1 + T(3) * mu1 * v) + q * (mu2 * mu2 * mu2 + T(3) * mu2 * v) - M3;
  const T a0 = scale * r0, a1 = scale * r1, a2 = scale * r2;
  *g_mu1 = a0 * w + a1 * (T(2) * w * mu1) + a2 * (w * (T(3) * mu1 * mu1 + T(3) * v));
  *g_mu2 = a0 * q + a1 * (T(2) * q * mu2) + a2 * (q * (T(3) * mu2 * mu2 + T(3) * v));
  *g_beta = (a1 * V + a2 * (T(3) * (w * mu1 + q * mu2) * V)) * inside;
}

// One Adan update of one parameter (sail-sg Adan recursion, no weight decay, no gradient clipping).
// p holds -g_{k-1} on entry (-g_1 at k = 1, so the first difference is 0) and -g_k on exit.
template <typename T>
GMMK_HD void adan_update(T& th, T& m, T& d, T& n, T& p, T g, T c1, T c2, T s3) {
  p += g;                                          // diff = g_k - g_{k-1}
  m = m * T(kBeta1) + T(1.0 - kBeta1) * g;
  d = d * T(kBeta2) + T(1.0 - kBeta2) * p;
  p = p * T(kBeta2) + g;                           // g_k + beta2 diff
  n = n * T(kBeta3) + T(1.0 - kBeta3) * p * p;
  const T den = sqrt(n) / s3 + T(kAdanEps);
  th = th + (-c1) * (m / den);
  th = th + (-c2) * (d / den);
  p = -g;
}

// The full official solve for one element (registers only). Returns (mu1, mu2, V clamp(beta, 0.1, 1.2)).
template <typename T>
GMMK_HD void adan_fit(T M1, T V, T M3, T w, T scale, int iters, double lr, T* mu1_out, T* mu2_out, T* v_out) {
  T th0 = M1, th1 = M1 - T(kMu2Offset), th2 = T(kBetaInit);
  T m0 = 0, m1 = 0, m2 = 0, d0 = 0, d1 = 0, d2 = 0, n0 = 0, n1 = 0, n2 = 0, p0 = 0, p1 = 0, p2 = 0;
  AdanSchedule sch;
  for (int k = 1; k <= iters; ++k) {
    sch.next(lr);
    T g0, g1, g2;
    objective_grad<T>(w, M1, V, M3, th0, th1, th2, scale, &g0, &g1, &g2);
    if (k == 1) {
      p0 = -g0;
      p1 = -g1;
      p2 = -g2;
    }
    const T c1 = static_cast<T>(sch.c1), c2 = static_cast<T>(sch.c2), s3 = static_cast<T>(sch.s3);
    adan_update<T>(th0, m0, d0, n0, p0, g0, c1, c2, s3);
    adan_update<T>(th1, m1, d1, n1, p1, g1, c1, c2, s3);
    adan_update<T>(th2, m2, d2, n2, p2, g2, c1, c2, s3);
  }
  const T lo = T(kBetaMin), hi = T(kBetaMax);
  const T bc = th2 < lo ? lo : (th2 > hi ? hi : th2);
  *mu1_out = th0;
  *mu2_out = th1;
  *v_out = V * bc;
}

// Scalar coefficients of one GMS step (docs/methods.md (GMS)).
struct StepCoef {
  double a_t, sigma_t, A, B, lam2;
};

GMMK_HD double clampd(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

// Moments of x_s | x_t from the three head outputs with the official clamps. Returns M1, V, M3.
GMMK_HD void step_moments(double xt, double e1, double e2, double e3, const StepCoef& c, double* M1, double* V, double* M3) {
  const double at = c.a_t, st = c.sigma_t;
  const double E0 = clampd((xt - st * e1) / at, -1.0, 1.0);
  const double Var0 = clampd(st * st / (at * at) * (e2 - e1 * e1), 0.0, 1.0);
  const double E2 = clampd((xt * xt - 2.0 * st * xt * e1 + st * st * e2) / (at * at), 0.0, 1.0);
  double E3 = (xt * xt * xt - 3.0 * st * xt * xt * e1 + 3.0 * st * st * xt * e2 - st * st * st * e3) / (at * at * at);
  E3 = fabs(E3) <= fabs(E0) ? E3 : E0;
  E3 = clampd(E3, -1.0, 1.0);
  const double ax = c.A * xt, B = c.B;
  *M1 = clampd(ax + B * E0, -1000.0, 1000.0);
  *V = clampd(c.lam2 + B * B * Var0, 0.0, 1.0);
  *M3 = ax * ax * ax + 3.0 * ax * ax * B * E0 + 3.0 * ax * B * B * E2 + B * B * B * E3 + 3.0 * c.lam2 * (ax + B * E0);
}

struct StepParams {
  StepCoef coef;
  double w, lr, floor_frac, var_clip, scale;  // scale = 2 / n_el
  int method, iters, per_image;
  uint64_t seed;
  uint32_t offset;
  int64_t inner;  // elements per image (per leading index)
};

// step_moments, with NaN in any input giving NaN moments (the official |E3| <= |E0| heuristic would otherwise hide a
// NaN e3).
GMMK_HD void step_moments_nan(double xt, double e1, double e2, double e3, const StepCoef& c, double* M1, double* V, double* M3) {
  step_moments(xt, e1, e2, e3, c, M1, V, M3);
  if (isnan(xt) || isnan(e1) || isnan(e2) || isnan(e3)) *M1 = *V = *M3 = NAN;
}

// The draw from a fitted element: component 1 when u < w, x_s = mu + sqrt(max(v, 0)) z (NaN v stays NaN).
GMMK_HD double draw_from_fit(double mu1, double mu2, double v, double w, double u, double z) {
  const double mu = u < w ? mu1 : mu2;
  const double vv = v < 0.0 ? 0.0 : v;
  return mu + sqrt(vv) * z;
}

// One element of the fused step with its random numbers given: moments -> fit -> component (1 when u < w) ->
// x_s = mu + sqrt(v) z. T is the adan compute type.
template <typename T>
GMMK_HD double step_element_draw(double xt, double e1, double e2, double e3, const StepParams& P, double u, double z,
                                 double* mu1, double* mu2, double* v) {
  double M1, V, M3;
  step_moments_nan(xt, e1, e2, e3, P.coef, &M1, &V, &M3);
  if (P.method == kAdan) {
    T a, b, c;
    adan_fit<T>(static_cast<T>(M1), static_cast<T>(V), static_cast<T>(M3), static_cast<T>(P.w), static_cast<T>(P.scale),
                P.iters, P.lr, &a, &b, &c);
    *mu1 = a;
    *mu2 = b;
    *v = c;
  } else if (P.method == kGaussian) {
    *mu1 = *mu2 = M1;
    *v = V > P.var_clip ? P.var_clip : V;
  } else {
    const Fit f = closed_fit(M1, V, M3, P.w, P.floor_frac);
    *mu1 = f.mu1;
    *mu2 = f.mu2;
    *v = f.v;
  }
  return draw_from_fit(*mu1, *mu2, *v, P.w, u, z);
}

// Index of the component stream of element i: its image (per_image) or the element itself.
GMMK_HD uint64_t component_index(int64_t i, const StepParams& P) {
  return P.per_image ? static_cast<uint64_t>(i / P.inner) : static_cast<uint64_t>(i);
}

// One element of the fused step, drawing u (stream (seed, component_index, offset, tag 6)) and z (stream
// (seed, i, offset, tag 7)) itself.
template <typename T>
GMMK_HD double step_element(double xt, double e1, double e2, double e3, int64_t i, const StepParams& P, double* mu1,
                            double* mu2, double* v) {
  rng::Stream su(P.seed, component_index(i, P), P.offset, kTagComponent);
  const double u = su.uniform();
  rng::Stream sz(P.seed, static_cast<uint64_t>(i), P.offset, kTagNoise);
  const double z = sz.normal();
  return step_element_draw<T>(xt, e1, e2, e3, P, u, z, mu1, mu2, v);
}

}  // namespace gms_fit
}  // namespace gmmkernels
