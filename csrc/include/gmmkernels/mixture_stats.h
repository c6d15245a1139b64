// Per-(point, component) math of gmmkernels::mixture_stats, shared by the CPU and the CUDA kernels.
//
// Notation (one batch entry b, one point n, one component k):
//   delta = x_n - mu_k,  y = W_k delta,  logit_k = logc_k - 1/2 |y|^2,  s_k = -W_k^T y
//   logp = LSE_k logit_k,  r_k = softmax_k logit_k,  score = sum_k r_k s_k
// W_k is diag(prec_k) (diag) or the lower triangle of prec_k (full; the upper triangle is ignored).
//
// Backward of L = g logp + G.score + H.resp (g scalar per row, G [D] and H [K] optional, zero when absent):
//   a_k   = dL/dlogit_k = r_k [ g + (G.s_k - G.S) + (H_k - sum_j r_j H_j) ]
//   gy_k  = dL/dy_k     = -a_k y_k - r_k W_k G
//   dL/dx = sum_k W_k^T gy_k,  dL/dmu_k = -W_k^T gy_k,  dL/dlogc_k = a_k,  dL/dW_k = gy_k delta^T - r_k y_k G^T
//
// This header holds only scalar/row helpers with no dependency on torch, so it compiles in plain C++ and in
// nvcc translation units that include nothing but the CUDA runtime.
#pragma once

#include <cmath>
#include <cstdint>

#include "gmmkernels/common.h"

namespace gmmkernels {
namespace mixture_stats {

template <typename T>
GMMK_HD T neg_inf() {
  return -static_cast<T>(INFINITY);
}

// ---- element formulas -------------------------------------------------------------------------------

// One coordinate of y = W delta for a diagonal W.
template <typename T>
GMMK_HD T diag_y(T w, T x, T mu) {
  return w * (x - mu);
}

// One coordinate of the component score s = -W^T y for a diagonal W.
template <typename T>
GMMK_HD T diag_s(T w, T y) {
  return -(w * y);
}

template <typename T>
GMMK_HD T logit_of(T logc, T sq) {
  return logc - sq * 0.5f;  // 0.5f: exact in every precision, and valid for SIMD vector types of T too
}

// a_k = dL/dlogit_k from r_k, g, (G.s_k - G.S) and (H_k - sum_j r_j H_j).
template <typename T>
GMMK_HD T dlogit(T r, T g, T gs_minus_gS, T h_minus_rH) {
  return r * (g + gs_minus_gS + h_minus_rH);
}

// One coordinate of gy = dL/dy = -a y - r (W G).
template <typename T>
GMMK_HD T grad_y(T a, T y, T r, T wg) {
  return -(a * y) - r * wg;
}

// One entry of dL/dW = gy delta^T - r y G^T  (diag: i == j).
template <typename T>
GMMK_HD T grad_w(T gy_i, T delta_j, T r, T y_i, T g_j) {
  return gy_i * delta_j - r * (y_i * g_j);
}

// ---- online log-sum-exp -------------------------------------------------------------------------------
// push(l) returns the weight of the new term and writes the factor the previous accumulators must be
// multiplied by, so that sum_k exp(l_k - m) * v_k can be accumulated in one pass. NaN logits make the row NaN
// (they never become the maximum, but exp(NaN - m) = NaN enters the sum); -inf logits contribute 0.
template <typename T>
struct OnlineLSE {
  T m;
  T s;
  GMMK_HD void init() {
    m = neg_inf<T>();
    s = T(0);
  }
  template <typename ExpFn>
  GMMK_HD T push(T l, T& rescale, ExpFn ex) {
    if (l > m) {
      rescale = (m == neg_inf<T>()) ? T(0) : ex(m - l);
      m = l;
      s = s * rescale + T(1);
      return T(1);
    }
    rescale = T(1);
    const T p = (m == neg_inf<T>()) ? (l == l ? T(0) : l) : ex(l - m);
    s += p;
    return p;
  }
  // log of the sum (= -inf when every logit was -inf).
  template <typename LogFn>
  GMMK_HD T lse(LogFn lg) const {
    return m == neg_inf<T>() ? (s == s ? neg_inf<T>() : s) : m + lg(s);
  }
  // Softmax weight exp(l - m) / s of a logit pushed before (NaN when every logit was -inf, as torch.softmax).
  // Not exp(l - lse): lse carries a rounding error of u |lse|, which would enter every weight.
  template <typename ExpFn>
  GMMK_HD T prob(T l, ExpFn ex) const {
    return ex(l - m) / s;
  }
};

}  // namespace mixture_stats
}  // namespace gmmkernels
