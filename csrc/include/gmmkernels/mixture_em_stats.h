// Maths of gmmkernels::mixture_em_stats shared by the CPU and the CUDA kernels: one EM / VB iteration's E-step and
// sufficient statistics in one pass over the data (docs/kernels.md (mixture_em_stats)).
//
// Notation (one batch entry, one point n, one component k; W_k = diag(prec_k) or the lower triangle of prec_k):
//   y      = W_k x_n - b_k,   b_k = W_k mu_k  (so y = W_k (x_n - mu_k); one fused multiply-add per term)
//   l_nk   = logc_k - |y|^2 / 2,   log p_n = LSE_k l_nk,   r_nk = exp(l_nk - log p_n)
//   outputs: sum_n log p_n,  sum_n sum_k r_nk log r_nk,  N_k = sum_n r_nk,  S1_k = sum_n r_nk x_n,
//            S2_k = sum_n r_nk x_n^2 (diag) or sum_n r_nk x_n x_n^T (full)
// The statistics are one product R^T F of the responsibilities with the features F_n = [x_n, x_n^2] (diag) or
// [x_n, vech(x_n x_n^T)] (full: the lower triangle packed row by row, entry (i, j <= i) at tri(i, j)).
//
// No torch header: it compiles in plain C++ and in nvcc translation units.
#pragma once

#include <cmath>
#include <cstdint>

#include "gmmkernels/common.h"

namespace gmmkernels {
namespace mixture_em_stats {

// Position of entry (i, j), j <= i, of a lower triangle packed row by row.
GMMK_HD int64_t tri(int64_t i, int64_t j) { return i * (i + 1) / 2 + j; }

// The row i and column j <= i of position q of a lower triangle packed row by row (the inverse of tri).
GMMK_HD void untri(int64_t q, int64_t* i, int64_t* j) {
  int64_t r = static_cast<int64_t>((sqrt(8.0 * static_cast<double>(q) + 1.0) - 1.0) * 0.5);
  while (r * (r + 1) / 2 > q) --r;
  while ((r + 1) * (r + 2) / 2 <= q) ++r;
  *i = r;
  *j = q - r * (r + 1) / 2;
}

// Columns of the second-moment part of F: D (diag) or D (D + 1) / 2 (full).
GMMK_HD int64_t second_moments(int64_t D, bool full) { return full ? D * (D + 1) / 2 : D; }

// One coordinate of y = W x - W mu (diag: w x - w mu), as one fused multiply-add. Its rounding error is about
// eps |W mu| |y| (against eps |y|^2 for y = W (x - mu) and eps |W x|^2 for the expanded quadratic form); EM and VB
// centre the data first, so |W mu| stays of the order of the spread of the data in units of the component's scale.
template <typename T>
GMMK_HD T y_term(T w, T x, T wmu) {
  return w * x - wmu;
}

// The term r log r of the responsibility entropy, from r and l - log p: 0 where r = 0 (including l = -inf), NaN
// where r is NaN.
template <typename T>
GMMK_HD T r_log_r(T r, T log_r) {
  return r == T{} ? T{} : r * log_r;  // T{}: also the zero vector of the CPU kernels
}

// Online log-sum-exp that also carries t = sum_k exp(l_k - m) (l_k - m), so that one pass over the components gives
// log p = m + log s and sum_k r_k log r_k = t / s - log s. NaN logits never become the maximum but make s NaN;
// -inf logits add nothing.
template <typename T>
struct OnlineLSE2 {
  T m, s, t;
  GMMK_HD void init() {
    m = -static_cast<T>(INFINITY);
    s = T(0);
    t = T(0);
  }
  template <typename ExpFn>
  GMMK_HD void push(T l, ExpFn ex) {
    if (l > m) {
      if (m == -static_cast<T>(INFINITY)) {
        s = s + T(1);  // s is 0 here unless a NaN came first (then it stays NaN)
      } else {
        const T d = m - l;  // < 0
        const T c = ex(d);
        t = c * (t + s * d);
        s = c * s + T(1);
      }
      m = l;
    } else if (m != -static_cast<T>(INFINITY) || l != l) {
      const T lm = l - m;
      const T e = (l == l) ? ex(lm) : l;
      s += e;
      t += r_log_r(e, lm);
    }
  }
};

}  // namespace mixture_em_stats
}  // namespace gmmkernels
