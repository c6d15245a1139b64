// mixture_em_stats on CPU: one EM / VB iteration's E-step and sufficient statistics in one pass over the data
// (maths in csrc/include/gmmkernels/mixture_em_stats.h).
//
// Layout of the work: the components lie in the lanes of the vectors (K padded to a multiple of L = 64 / sizeof(T)
// with components of weight 0), the points are read row by row from x as it is stored and broadcast. Each tile of
// TR rows goes through
//   1. logits   l[n][k] for RN rows x KVB component vectors at a time (2 fused multiply-adds per (n, k, d) diag);
//   2. softmax  per row, 4 rows interleaved: max, exp, sum (horizontal reductions), r = e / s, written over the
//               logits in the tile scratch (and copied to the output when the responsibilities are asked for);
//   3. features F[p][n] = [x_n, x_n^2] (diag) or [x_n, vech(x_n x_n^T)] (full), stored by feature and computed
//               as vectors over the rows of the tile;
//   4. statistics S[p][k] += sum_n F[p][n] r[n][k], a small matrix product held in PB x KVB registers over the
//               rows of the tile (2 fused multiply-adds per (n, k, d) diag).
// Nothing of size N x K leaves the tile. The rows of one data set are cut into chunks whose length depends on N
// only; each chunk sums its tiles in a fixed order (tiles in T, chunk totals in double) and the chunk totals are
// added in chunk order, so the result does not depend on the number of threads.
#include <ATen/Parallel.h>
#include <torch/all.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cpu_em_tiles.h"
#include "gmmkernels/cpu_vec.h"
#include "gmmkernels/mixture_em_stats.h"
#include "gmmkernels/mixture_em_stats_checks.h"

namespace gmmkernels {
namespace {

using namespace gmmkernels::mixture_em_stats;
using namespace gmmkernels::cpu;

// Parameters of batch entry b in the component-lanes layout: W[w][kv], Wmu[d][kv] = (W mu)_d, logc[kv] (padding
// components: W = 0, Wmu = 0, logc = -inf, so their r is 0).
template <typename T>
void pack_params(const Shape<T>& s, const T* means, const T* prec, const T* logc, int64_t b,
                 typename VecOf<T>::V* out) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = Shape<T>::L;
  const int64_t K = s.K, D = s.D, KV = s.KV, NW = s.NW;
  V* W = out;
  V* Wmu = out + NW * KV;
  V* lc = Wmu + D * KV;
  std::fill(out, out + s.params_per_batch(), V{});
  for (int64_t kv = 0; kv < KV; ++kv) lc[kv] = splat<V>(-std::numeric_limits<T>::infinity());
  for (int64_t k = 0; k < K; ++k) {
    const int64_t kv = k / L, lane = k % L;
    const T* mu = means + (b * K + k) * D;
    lc[kv][lane] = logc[b * K + k];
    if (!s.full) {
      const T* w = prec + (b * K + k) * D;
      for (int64_t d = 0; d < D; ++d) {
        W[d * KV + kv][lane] = w[d];
        Wmu[d * KV + kv][lane] = w[d] * mu[d];
      }
    } else {
      const T* Wk = prec + (b * K + k) * D * D;
      for (int64_t i = 0; i < D; ++i) {
        T a = T(0);
        for (int64_t j = 0; j <= i; ++j) {
          W[tri(i, j) * KV + kv][lane] = Wk[i * D + j];
          a += Wk[i * D + j] * mu[j];
        }
        Wmu[i * KV + kv][lane] = a;
      }
    }
  }
}

// Logits of RN consecutive rows (x, row stride D) for the component vectors kv0 .. kv0 + KVB - 1, diag W.
template <typename T, int RN, int KVB>
inline void logits_diag(const T* __restrict x, int64_t D, const typename VecOf<T>::V* __restrict W,
                        const typename VecOf<T>::V* __restrict Wmu, const typename VecOf<T>::V* __restrict lc,
                        int64_t KV, int64_t kv0, typename VecOf<T>::V* __restrict out) {
  typedef typename VecOf<T>::V V;
  V acc[RN][KVB];
  for (int r = 0; r < RN; ++r)
    for (int j = 0; j < KVB; ++j) acc[r][j] = V{};
  for (int64_t d = 0; d < D; ++d) {
    V w[KVB], wm[KVB];
    for (int j = 0; j < KVB; ++j) {
      w[j] = W[d * KV + kv0 + j];
      wm[j] = Wmu[d * KV + kv0 + j];
    }
    for (int r = 0; r < RN; ++r) {
      const V xv = splat<V>(x[r * D + d]);
      for (int j = 0; j < KVB; ++j) {
        const V y = y_term(w[j], xv, wm[j]);
        acc[r][j] += y * y;
      }
    }
  }
  for (int r = 0; r < RN; ++r)
    for (int j = 0; j < KVB; ++j) out[r * KV + kv0 + j] = lc[kv0 + j] - acc[r][j] * T(0.5);
}

// The same with a full (lower-triangular) W: y_i = sum_{j <= i} W_ij x_j - (W mu)_i.
template <typename T, int RN, int KVB>
inline void logits_full(const T* __restrict x, int64_t D, const typename VecOf<T>::V* __restrict W,
                        const typename VecOf<T>::V* __restrict Wmu, const typename VecOf<T>::V* __restrict lc,
                        int64_t KV, int64_t kv0, typename VecOf<T>::V* __restrict out) {
  typedef typename VecOf<T>::V V;
  V sq[RN][KVB];
  for (int r = 0; r < RN; ++r)
    for (int j = 0; j < KVB; ++j) sq[r][j] = V{};
  for (int64_t i = 0; i < D; ++i) {
    V y[RN][KVB];
    for (int j = 0; j < KVB; ++j) {
      const V wm = Wmu[i * KV + kv0 + j];
      for (int r = 0; r < RN; ++r) y[r][j] = -wm;
    }
    const V* Wi = W + tri(i, 0) * KV + kv0;
    for (int64_t c = 0; c <= i; ++c) {
      V w[KVB];
      for (int j = 0; j < KVB; ++j) w[j] = Wi[c * KV + j];
      for (int r = 0; r < RN; ++r) {
        const V xv = splat<V>(x[r * D + c]);
        for (int j = 0; j < KVB; ++j) y[r][j] += w[j] * xv;
      }
    }
    for (int r = 0; r < RN; ++r)
      for (int j = 0; j < KVB; ++j) sq[r][j] += y[r][j] * y[r][j];
  }
  for (int r = 0; r < RN; ++r)
    for (int j = 0; j < KVB; ++j) out[r * KV + kv0 + j] = lc[kv0 + j] - sq[r][j] * T(0.5);
}

template <typename T, bool FULL, int RN, int KVB>
inline void logits_rows(const T* x, int64_t D, const typename VecOf<T>::V* W, const typename VecOf<T>::V* Wmu,
                        const typename VecOf<T>::V* lc, int64_t KV, int64_t kv0, typename VecOf<T>::V* out) {
  if (FULL)
    logits_full<T, RN, KVB>(x, D, W, Wmu, lc, KV, kv0, out);
  else
    logits_diag<T, RN, KVB>(x, D, W, Wmu, lc, KV, kv0, out);
}

// Logits of rows [0, nr) of a tile into Lr [nr][KV].
template <typename T, bool FULL>
void tile_logits(const T* x, int64_t nr, int64_t D, const typename VecOf<T>::V* W, const typename VecOf<T>::V* Wmu,
                 const typename VecOf<T>::V* lc, int64_t KV, typename VecOf<T>::V* Lr) {
  int64_t kv = 0;
  for (; kv + 2 <= KV; kv += 2) {
    int64_t n = 0;
    for (; n + 4 <= nr; n += 4) logits_rows<T, FULL, 4, 2>(x + n * D, D, W, Wmu, lc, KV, kv, Lr + n * KV);
    for (; n < nr; ++n) logits_rows<T, FULL, 1, 2>(x + n * D, D, W, Wmu, lc, KV, kv, Lr + n * KV);
  }
  for (; kv < KV; ++kv) {
    int64_t n = 0;
    for (; n + 8 <= nr; n += 8) logits_rows<T, FULL, 8, 1>(x + n * D, D, W, Wmu, lc, KV, kv, Lr + n * KV);
    for (; n < nr; ++n) logits_rows<T, FULL, 1, 1>(x + n * D, D, W, Wmu, lc, KV, kv, Lr + n * KV);
  }
}

constexpr int kSoftRows = 4;  // rows whose softmax runs interleaved (independent latency chains)

// Softmax of RB consecutive rows of logits l [RB][KV] in place (r = e / s), their responsibilities added to nkv, and
// the row sums of log p and sum_k r log r: log p = m + log s and sum_k r log r = t / s - log s, where the logs of s
// are taken once per 16 rows from their product (s lies in [1, K]), with the binary exponent kept apart. The RB rows
// go through each stage together, so that their chains of horizontal reductions, exponentials and divisions overlap.
template <typename T, int RB>
inline void softmax_rows(typename VecOf<T>::V* __restrict l, int64_t KV, typename VecOf<T>::V* __restrict nkv,
                         int64_t row0, double& lp, double& rl, double& prod, int64_t& expo) {
  typedef typename VecOf<T>::V V;
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  const V lowest = splat<V>(std::numeric_limits<T>::lowest());
  V ms[RB], sv[RB], tv[RB];
  for (int r = 0; r < RB; ++r) ms[r] = splat<V>(ninf);
  for (int64_t kv = 0; kv < KV; ++kv)
    for (int r = 0; r < RB; ++r) ms[r] = vmax(ms[r], l[r * KV + kv]);
  for (int r = 0; r < RB; ++r) {
    ms[r] = hmax_all(ms[r]);
    if (ms[r][0] == ninf) ms[r] = V{};  // every logit -inf: log p = -inf, r = NaN
    sv[r] = V{};
    tv[r] = V{};
  }
  for (int64_t kv = 0; kv < KV; ++kv)
    for (int r = 0; r < RB; ++r) {
      const V lm = l[r * KV + kv] - ms[r];
      const V e = vexp<true>(lm);
      l[r * KV + kv] = e;
      sv[r] += e;
      tv[r] += e * vmax(lm, lowest);  // r_log_r(e, lm) in two operations: e = 0 where lm = -inf; NaN stays NaN
    }
  V inv[RB];
  for (int r = 0; r < RB; ++r) {
    sv[r] = hsum_all(sv[r]);
    tv[r] = hsum_all(tv[r]);
    inv[r] = T(1) / sv[r];
  }
  for (int64_t kv = 0; kv < KV; ++kv)
    for (int r = 0; r < RB; ++r) {
      const V q = l[r * KV + kv] * inv[r];
      l[r * KV + kv] = q;
      nkv[kv] += q;
    }
  for (int r = 0; r < RB; ++r) {
    lp += static_cast<double>(ms[r][0]);
    rl += static_cast<double>(tv[r][0]) / static_cast<double>(sv[r][0]);
    prod *= static_cast<double>(sv[r][0]);
    if (((row0 + r) & 15) == 15) {
      int e;
      prod = std::frexp(prod, &e);
      expo += e;
    }
  }
}

template <typename T, bool FULL>
void em_stats_impl(const Shape<T>& s, const T* x, int64_t x_bstride, const T* means, const T* prec, const T* logc,
                   T* resp, double* partial) {
  typedef typename VecOf<T>::V V;
  const int64_t B = s.B, N = s.N, K = s.K, D = s.D, KV = s.KV;
  const int64_t npar = s.params_per_batch();
  std::vector<V> params(B * npar);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) pack_params<T>(s, means, prec, logc, b, params.data() + b * npar);
  });
  run_tiles<T, FULL>(s, x, x_bstride, partial,
                     [&](int64_t b, int64_t n0, int64_t nr, const T* xt, V* Lr, V* nkv, TileScalars& sc) {
    const V* W = params.data() + b * npar;
    const V* Wmu = W + s.NW * KV;
    const V* lc = Wmu + D * KV;
    tile_logits<T, FULL>(xt, nr, D, W, Wmu, lc, KV, Lr);
    int64_t n = 0;
    for (; n + kSoftRows <= nr; n += kSoftRows)
      softmax_rows<T, kSoftRows>(Lr + n * KV, KV, nkv, n0 + n, sc.lp, sc.rl, sc.prod, sc.expo);
    for (; n < nr; ++n) softmax_rows<T, 1>(Lr + n * KV, KV, nkv, n0 + n, sc.lp, sc.rl, sc.prod, sc.expo);
    if (resp != nullptr)
      for (int64_t i = 0; i < nr; ++i) {
        T* rr = resp + (b * N + n0 + i) * K;
        const T* src = reinterpret_cast<const T*>(Lr + i * KV);
        for (int64_t k = 0; k < K; ++k) rr[k] = src[k];
      }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_em_stats_cpu(
    const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec, const at::Tensor& logc, bool full,
    bool with_resp) {
  const Sizes z = check_inputs(x, means, prec, logc, full, c10::DeviceType::CPU);
  auto xc = x.contiguous(), mc = means.contiguous(), pc = prec.contiguous(), cc = logc.contiguous();
  const auto opt = x.options();
  auto lp = at::empty({z.B}, opt), rl = at::empty({z.B}, opt), nk = at::empty({z.B, z.K}, opt);
  auto sx = at::empty({z.B, z.K, z.D}, opt);
  auto sxx = full ? at::empty({z.B, z.K, z.D, z.D}, opt) : at::empty({z.B, z.K, z.D}, opt);
  auto resp = optional_output(with_resp, {z.B, z.N, z.K}, opt);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_em_stats_cpu", [&] {
    const Shape<scalar_t> s(z.B, z.N, z.K, z.D, full);
    std::vector<double> partial(std::max<int64_t>(1, z.B * s.nch * s.partial_size()));
    scalar_t* rp = with_resp ? resp.data_ptr<scalar_t>() : nullptr;
    if (full)
      em_stats_impl<scalar_t, true>(s, xc.const_data_ptr<scalar_t>(), batch_stride(xc), mc.const_data_ptr<scalar_t>(),
                                    pc.const_data_ptr<scalar_t>(), cc.const_data_ptr<scalar_t>(), rp, partial.data());
    else
      em_stats_impl<scalar_t, false>(s, xc.const_data_ptr<scalar_t>(), batch_stride(xc), mc.const_data_ptr<scalar_t>(),
                                     pc.const_data_ptr<scalar_t>(), cc.const_data_ptr<scalar_t>(), rp, partial.data());
    reduce_partials<scalar_t>(s, partial.data(), lp.data_ptr<scalar_t>(), rl.data_ptr<scalar_t>(),
                              nk.data_ptr<scalar_t>(), sx.data_ptr<scalar_t>(), sxx.data_ptr<scalar_t>());
  });
  return {lp, rl, nk, sx, sxx, resp};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) { m.impl("mixture_em_stats", &gmmkernels::mixture_em_stats_cpu); }
