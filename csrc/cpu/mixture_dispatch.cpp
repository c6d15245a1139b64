// CPU kernel of gmmkernels::mixture_dispatch: nearest center (GEMM-form distances + argmin) fused with the
// gather of the center and the centred forward noising. Semantics: gmmkernels/mixddpm_reference.py and
// csrc/include/gmmkernels/mixture_dispatch_launch.h.
//
// Layout of the work: |c_k|^2 once; then blocks of rows in parallel (at::parallel_for). Inside a block,
// tiles of kRows rows are scored against every center with kRows simultaneous dot products (each center row
// is read once per tile, the inner loop over D vectorises), the running (min, argmin) is kept per row with a
// strict '<' (lowest index on ties, non-finite never wins), and the epilogue streams x0, c_j and eps once to write x_t
// and the exact squared distance. Accumulation is in the input type (float or double). Half types are cast
// to float32 by the Python wrapper.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/mixture_dispatch_checks.h"

namespace gmmkernels {
namespace {

constexpr int64_t kRows = 4;

// Epilogue of one row: x_t = a x0 + (1 - a) c_j + sigma eps and the exact |x0 - c_j|^2.
template <typename T>
inline void finish_row(const T* x0, const T* c, const T* a, const T* sigma, const T* eps, T* xt, int64_t* assign,
                       T* dist2, int64_t n, int64_t j, int64_t D) {
  const T* xn = x0 + n * D;
  const T* cj = c + j * D;
  const T an = a[n];
  const T bn = T(1) - an;
  const T sn = sigma[n];
  T* on = xt + n * D;
  T acc = 0;
  if (eps != nullptr) {
    const T* en = eps + n * D;
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < D; ++d) {
      const T diff = xn[d] - cj[d];
      acc += diff * diff;
      on[d] = an * xn[d] + bn * cj[d] + sn * en[d];
    }
  } else {
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < D; ++d) {
      const T diff = xn[d] - cj[d];
      acc += diff * diff;
      on[d] = an * xn[d] + bn * cj[d];
    }
  }
  assign[n] = j;
  dist2[n] = acc;
}

// Small D (toy data, D <= kSmallD): a vector over D is too short to pay, so the tile is kSmallRows rows wide and
// the loops over rows vectorise instead (x tile transposed once; per center one multiply-add per (d, row) and a
// masked (min, argmin) update per row). Same tie and non-finite rules as the wide path.
constexpr int64_t kSmallD = 8, kSmallRows = 16;

template <typename T>
void dispatch_rows_small_d(const T* x0, const T* c, const T* cn, const T* a, const T* sigma, const T* eps, T* xt,
                           int64_t* assign, T* dist2, int64_t n0, int64_t n1, int64_t K, int64_t D) {
  const T inf = std::numeric_limits<T>::infinity();
  for (int64_t r0 = n0; r0 < n1; r0 += kSmallRows) {
    const int64_t nr = std::min(kSmallRows, n1 - r0);
    T xs[kSmallD][kSmallRows];
    for (int64_t d = 0; d < D; ++d)
      for (int64_t r = 0; r < kSmallRows; ++r) xs[d][r] = x0[(r0 + std::min(r, nr - 1)) * D + d];
    T best[kSmallRows];
    int64_t bidx[kSmallRows];
    for (int64_t r = 0; r < kSmallRows; ++r) {
      best[r] = inf;
      bidx[r] = 0;
    }
    for (int64_t k = 0; k < K; ++k) {
      const T* ck = c + k * D;
      T dot[kSmallRows] = {};
      for (int64_t d = 0; d < D; ++d) {
        const T v = ck[d];
#pragma omp simd
        for (int64_t r = 0; r < kSmallRows; ++r) dot[r] += xs[d][r] * v;
      }
      const T ck2 = cn[k];
#pragma omp simd
      for (int64_t r = 0; r < kSmallRows; ++r) {
        const T dist = ck2 - T(2) * dot[r];
        const bool better = dist < best[r] && dist > -inf;
        best[r] = better ? dist : best[r];
        bidx[r] = better ? k : bidx[r];
      }
    }
    for (int64_t r = 0; r < nr; ++r) finish_row(x0, c, a, sigma, eps, xt, assign, dist2, r0 + r, bidx[r], D);
  }
}

template <typename T>
void dispatch_rows(const T* x0, const T* c, const T* cn, const T* a, const T* sigma, const T* eps, T* xt,
                   int64_t* assign, T* dist2, int64_t n0, int64_t n1, int64_t K, int64_t D) {
  if (D <= kSmallD) return dispatch_rows_small_d(x0, c, cn, a, sigma, eps, xt, assign, dist2, n0, n1, K, D);
  const T inf = std::numeric_limits<T>::infinity();
  for (int64_t r0 = n0; r0 < n1; r0 += kRows) {
    const int64_t nr = std::min(kRows, n1 - r0);
    T best[kRows];
    int64_t bidx[kRows];
    const T* xr[kRows];
    for (int64_t r = 0; r < kRows; ++r) {
      best[r] = inf;
      bidx[r] = 0;
      xr[r] = x0 + (r0 + std::min(r, nr - 1)) * D;  // short tile: repeat the last row (results discarded)
    }
    for (int64_t k = 0; k < K; ++k) {
      const T* ck = c + k * D;
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      const T *p0 = xr[0], *p1 = xr[1], *p2 = xr[2], *p3 = xr[3];
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t d = 0; d < D; ++d) {
        const T v = ck[d];
        s0 += p0[d] * v;
        s1 += p1[d] * v;
        s2 += p2[d] * v;
        s3 += p3[d] * v;
      }
      const T dots[kRows] = {s0, s1, s2, s3};
      for (int64_t r = 0; r < kRows; ++r) {
        const T dist = cn[k] - T(2) * dots[r];
        if (dist < best[r] && dist > -inf) {  // strict: the lowest index keeps a tie; NaN, +-inf never win
          best[r] = dist;
          bidx[r] = k;
        }
      }
    }
    for (int64_t r = 0; r < nr; ++r) finish_row(x0, c, a, sigma, eps, xt, assign, dist2, r0 + r, bidx[r], D);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_dispatch_cpu(const at::Tensor& x0, const at::Tensor& centers,
                                                                    const at::Tensor& a, const at::Tensor& sigma,
                                                                    const std::optional<at::Tensor>& eps) {
  mixture_dispatch::check_inputs(x0, centers, a, sigma, eps);
  const int64_t N = x0.size(0), D = x0.size(1), K = centers.size(0);
  auto xc = x0.contiguous();
  auto cc = centers.contiguous();
  auto ac = a.contiguous();
  auto sc = sigma.contiguous();
  auto ec = optional_contiguous(eps);
  auto xt = at::empty({N, D}, x0.options());
  auto assign = at::empty({N}, x0.options().dtype(at::kLong));
  auto dist2 = at::empty({N}, x0.options());
  if (N == 0) return {xt, assign, dist2};
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), "mixture_dispatch_cpu", [&] {
    const scalar_t* cp = cc.data_ptr<scalar_t>();
    std::vector<scalar_t> cn(K);
    for (int64_t k = 0; k < K; ++k) {
      scalar_t s = 0;
      for (int64_t d = 0; d < D; ++d) s += cp[k * D + d] * cp[k * D + d];
      cn[k] = s;
    }
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* ep = optional_data<scalar_t>(ec);
    const scalar_t* apt = ac.data_ptr<scalar_t>();
    const scalar_t* spt = sc.data_ptr<scalar_t>();
    scalar_t* op = xt.data_ptr<scalar_t>();
    int64_t* jp = assign.data_ptr<int64_t>();
    scalar_t* dp = dist2.data_ptr<scalar_t>();
    // grain: about 64k multiply-adds per task, in whole tiles
    const int64_t work = std::max<int64_t>(1, K * std::max<int64_t>(D, 1));
    const int64_t grain = std::max<int64_t>(kRows, ((65536 / work) / kRows + 1) * kRows);
    const int64_t tile = D <= kSmallD ? kSmallRows : kRows;
    at::parallel_for(0, (N + tile - 1) / tile, std::max<int64_t>(1, grain / tile), [&](int64_t t0, int64_t t1) {
      dispatch_rows<scalar_t>(xp, cp, cn.data(), apt, spt, ep, op, jp, dp, t0 * tile, std::min(N, t1 * tile), K, D);
    });
  });
  return {xt, assign, dist2};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) { m.impl("mixture_dispatch", &gmmkernels::mixture_dispatch_cpu); }
