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

// Largest D of the fused CUDA kernels (gmmkernels/mixture_em_stats_blocks.h): diag / spherical, and full (larger
// problems take the two-kernel path).
constexpr int64_t kEMStatsMaxDiagD = 256;
constexpr int64_t kEMStatsMaxFullD = 16;

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

// ---------------------------------------------------------------------------------------------------------------
// M-step (gmmkernels::mixture_em_mstep): the closed-form EM update of one mixture from the statistics above, and the
// kernel parameters of the next pass, per component k (scikit-learn's _estimate_gaussian_parameters and
// _compute_precision_cholesky; gmmkernels/reference/mixture_em_stats.py: mixture_em_mstep_ref):
//   n_k = N_k + 10 eps,   logits_k = log(n_k / sum_j n_j),   mu_k = S1_k / n_k
//   diag:      c_k = S2_k / n_k - mu_k^2 (clamped at 0 in float32) + reg;   scale = sqrt(c_k),   W = 1 / scale
//   spherical: the mean of the diag c_k over the D coordinates
//   full:      C_k = sym(S2_k / n_k - mu_k mu_k^T) + reg I = L L^T (Cholesky);   scale = L,   W = L^-1
//   logc_k = logits_k - sum_i log scale_ii - D log(2 pi) / 2   (the logits are normalised: LSE_j logits_j = 0)
// A component whose covariance is not positive (definite), or, in float32 with full covariances, whose C_k before
// the regularisation has no Cholesky factor (the host then projects it onto the PSD cone), is flagged as not ok;
// the caller redoes such a mixture on its host path, which projects or raises.

enum CovKind : int { kDiag = 0, kSpherical = 1, kFull = 2 };

// In-place lower Cholesky factor of the symmetric D x D matrix A (row-major; the upper triangle is read, the factor
// is written to the lower triangle and the upper triangle is set to 0). False when A is not positive definite (or
// holds NaN). Computed as A = U^T U row by row (right-looking), so that every inner loop runs along a row:
// contiguous, independent elements (the compiler vectorises them), then L = U^T.
template <typename T>
GMMK_HD bool cholesky_lower(T* A, int64_t D) {
  for (int64_t j = 0; j < D; ++j) {
    T* Uj = A + j * D;
    if (!(Uj[j] > T(0))) return false;
    const T d = sqrt(Uj[j]), inv = T(1) / d;
    Uj[j] = d;
    for (int64_t k = j + 1; k < D; ++k) Uj[k] *= inv;
    for (int64_t i = j + 1; i < D; ++i) {  // trailing update of rows i > j, columns k >= i
      T* Ai = A + i * D;
      const T u = Uj[i];
      for (int64_t k = i; k < D; ++k) Ai[k] -= u * Uj[k];
    }
  }
  for (int64_t i = 0; i < D; ++i)
    for (int64_t j = i + 1; j < D; ++j) {
      A[j * D + i] = A[i * D + j];
      A[i * D + j] = T(0);
    }
  return true;
}

// W = L^-1 of a lower-triangular L with a positive diagonal (both D x D row-major; W's upper triangle is 0), row by
// row: W_i = (e_i - sum_{q<i} L_iq W_q) / L_ii, each term a contiguous row update.
template <typename T>
GMMK_HD void lower_inverse(const T* L, T* W, int64_t D) {
  for (int64_t i = 0; i < D; ++i) {
    T* Wi = W + i * D;
    for (int64_t k = 0; k < D; ++k) Wi[k] = T(0);
    Wi[i] = T(1);
    for (int64_t q = 0; q < i; ++q) {
      const T l = L[i * D + q];
      const T* Wq = W + q * D;
      for (int64_t k = 0; k <= q; ++k) Wi[k] -= l * Wq[k];
    }
    const T inv = T(1) / L[i * D + i];
    for (int64_t k = 0; k <= i; ++k) Wi[k] *= inv;
  }
}

// sum_i log v_i of D positive values at stride `step`, as the log of their product (kept in range by frexp every 16
// factors, in double): one log instead of D.
template <typename T>
GMMK_HD T sum_log(const T* v, int64_t D, int64_t step) {
  double prod = 1.0;
  int expo = 0;
  for (int64_t i = 0; i < D; ++i) {
    prod *= static_cast<double>(v[i * step]);
    if ((i & 15) == 15) {
      int e;
      prod = frexp(prod, &e);
      expo += e;
    }
  }
  return static_cast<T>(log(prod) + expo * 0.69314718055994530942);
}

// sum_j n_j = sum_j (N_j + eps) of one mixture's counts nk[0..K), in index order: the normaliser of the weights.
template <typename T>
GMMK_HD T mstep_total(const T* nk, int64_t K, T eps) {
  T s = T(0);
  for (int64_t j = 0; j < K; ++j) s += nk[j] + eps;
  return s;
}

// The M-step of component k: nk, sx [D], sxx [D] (diag, spherical) or [D, D] (full) -> logits, mu [D], scale
// ([D] diag, [1] spherical, [D, D] full), W ([D] diag and spherical, [D, D] full), logc. total from mstep_total (the
// logits are then normalised log-weights, so logc takes them as they are). `low`: float32 arithmetic (clamp / PSD
// check as described above). Returns false when the component is not ok (its outputs are then unspecified).
template <typename T>
GMMK_HD bool mstep_component(T nk, const T* sx, const T* sxx, int64_t D, int kind, bool low, T reg, T eps, T total,
                             T* logits, T* mu, T* scale, T* W, T* logc) {
  const T n = nk + eps, inv_n = T(1) / n;
  const T lg = log(n / total);
  *logits = lg;
  for (int64_t i = 0; i < D; ++i) mu[i] = sx[i] * inv_n;
  const T half_log_2pi = T(0.91893853320467274178);
  T logdet = T(0);  // sum_i log scale_ii
  if (kind == kFull) {
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        const T a = sxx[i * D + j] * inv_n - mu[i] * mu[j];
        const T b = sxx[j * D + i] * inv_n - mu[j] * mu[i];
        const T c = T(0.5) * (a + b);
        scale[i * D + j] = c;
        scale[j * D + i] = c;
      }
    if (low) {  // float32: C before the regularisation must factor (else the host projects it onto the PSD cone)
      for (int64_t q = 0; q < D * D; ++q) W[q] = scale[q];
      if (!cholesky_lower(W, D)) return false;
    }
    for (int64_t i = 0; i < D; ++i) scale[i * D + i] += reg;
    if (!cholesky_lower(scale, D)) return false;
    lower_inverse(scale, W, D);
    logdet = sum_log(scale, D, D + 1);
  } else if (kind == kDiag) {  // simple loops over d, which the compiler vectorises
    int64_t bad = 0;
    for (int64_t i = 0; i < D; ++i) {
      T c = sxx[i] * inv_n - mu[i] * mu[i];
      if (low) c = c < T(0) ? T(0) : c;  // the clamp of the host path: NaN stays NaN
      c += reg;
      bad += !(c > T(0));
      scale[i] = c;
    }
    if (bad) return false;
    for (int64_t i = 0; i < D; ++i) scale[i] = sqrt(scale[i]);
    for (int64_t i = 0; i < D; ++i) W[i] = T(1) / scale[i];
    logdet = sum_log(scale, D, 1);
  } else {  // spherical: the mean of the diag variances
    T mean = T(0);
    for (int64_t i = 0; i < D; ++i) {
      T c = sxx[i] * inv_n - mu[i] * mu[i];
      if (low) c = c < T(0) ? T(0) : c;  // the clamp of the host path: NaN stays NaN
      mean += c + reg;
    }
    const T c = mean / static_cast<T>(D);
    if (!(c > T(0))) return false;
    scale[0] = sqrt(c);
    for (int64_t i = 0; i < D; ++i) W[i] = T(1) / scale[0];
    logdet = static_cast<T>(D) * log(scale[0]);
  }
  *logc = lg - logdet - static_cast<T>(D) * half_log_2pi;
  return true;
}

}  // namespace mixture_em_stats
}  // namespace gmmkernels
