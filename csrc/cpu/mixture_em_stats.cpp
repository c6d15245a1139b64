// mixture_em_stats on CPU: one EM / VB iteration's E-step and sufficient statistics in one pass over the data
// (maths in csrc/include/gmmkernels/mixture_em_stats.h).
//
// Layout of the work: the components lie in the lanes of the vectors (K padded to a multiple of
// L = kVecBytes / sizeof(T) with components of weight 0), the points are read row by row from x as it is stored and broadcast. Each tile of
// TR rows goes through
//   1. logits   l[n][k] for RN rows x KVB component vectors at a time (2 fused multiply-adds per (n, k, d) diag);
//   2. softmax  per row, in passes over the tile (softmax_tile): max, exp, sums (horizontal reductions), r = e / s,
//               written over the logits in the tile scratch (and copied to the output when the responsibilities are
//               asked for);
//   3. features F[p][n] = [x_n, x_n^2] (diag) or [x_n, vech(x_n x_n^T)] (full), stored by feature and computed
//               as vectors over the rows of the tile;
//   4. statistics S[p][k] += sum_n F[p][n] r[n][k], a small matrix product held in PB x KVB registers over the
//               rows of the tile (2 fused multiply-adds per (n, k, d) diag).
// Nothing of size N x K leaves the tile. The rows of one data set are cut into chunks whose length depends on N
// only; each chunk sums its tiles in a fixed order (tiles in T, chunk totals in double) and the chunk totals are
// added in chunk order, so the result does not depend on the number of threads. Small mixtures take a second path
// (em_stats_rows_impl, below) whose softmax runs with the rows in the lanes.
#include <ATen/Parallel.h>
#include <torch/all.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cpu_em_tiles.h"
#include "gmmkernels/cpu_vec.h"
#include "gmmkernels/mixture_em_stats.h"
#include "gmmkernels/mixture_em_stats_checks.h"
#include "gmmkernels/mixture_em_stats_iterate.h"

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

// pack_params of every batch entry, params_per_batch() vectors each.
template <typename T>
std::vector<typename VecOf<T>::V> pack_all_params(const Shape<T>& s, const T* means, const T* prec, const T* logc) {
  const int64_t npar = s.params_per_batch();
  std::vector<typename VecOf<T>::V> params(s.B * npar);
  at::parallel_for(0, s.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) pack_params<T>(s, means, prec, logc, b, params.data() + b * npar);
  });
  return params;
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
      in_register(w[j]);
      in_register(wm[j]);
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
      for (int j = 0; j < KVB; ++j) {
        w[j] = Wi[c * KV + j];
        in_register(w[j]);
      }
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
  // rows per block of a pair of component vectors (registers: 2 kRN sums, full: 4 kRN), then blocks of kRN2 rows, and
  // blocks of kRN1 rows for a last single component vector; 32 vector registers: a 64-row tile is 10 blocks of 6 + one
  // of 4 rows (full) or 8 blocks of 8 (diag); 16 registers: half the rows per block
  constexpr int kRN = kWideRegs ? (FULL ? 6 : 8) : (FULL ? 3 : 4);
  constexpr int kRN2 = kWideRegs ? 4 : 2, kRN1 = kWideRegs ? 8 : 4;
  int64_t kv = 0;
  for (; kv + 2 <= KV; kv += 2) {
    int64_t n = 0;
    for (; n + kRN <= nr; n += kRN) logits_rows<T, FULL, kRN, 2>(x + n * D, D, W, Wmu, lc, KV, kv, Lr + n * KV);
    for (; n + kRN2 <= nr; n += kRN2) logits_rows<T, FULL, kRN2, 2>(x + n * D, D, W, Wmu, lc, KV, kv, Lr + n * KV);
    for (; n < nr; ++n) logits_rows<T, FULL, 1, 2>(x + n * D, D, W, Wmu, lc, KV, kv, Lr + n * KV);
  }
  for (; kv < KV; ++kv) {
    int64_t n = 0;
    for (; n + kRN1 <= nr; n += kRN1) logits_rows<T, FULL, kRN1, 1>(x + n * D, D, W, Wmu, lc, KV, kv, Lr + n * KV);
    for (; n < nr; ++n) logits_rows<T, FULL, 1, 1>(x + n * D, D, W, Wmu, lc, KV, kv, Lr + n * KV);
  }
}

// G vectors of one row's (or one row vector's) softmax, l[0], l[stride], .., l[(G - 1) stride]: each logit l becomes
// e = exp(l - m), added to the sum s, and e (l - m) to the entropy sum t (r_log_r(e, l - m) in two operations: e = 0
// where l - m = -inf, and NaN stays NaN), in the order of the vectors. The G exponentials run interleaved (vexp_n);
// l - m is taken again after them rather than held in G more registers. lowest: the dtype's lowest value in every
// lane.
template <int G, typename V>
inline void exp_and_sums(V* __restrict l, int64_t stride, const V& m, V& s, V& t, const V& lowest) {
  V e[G];
  for (int i = 0; i < G; ++i) e[i] = l[i * stride] - m;
  vexp_n<true>(e);
  for (int i = 0; i < G; ++i) {
    const V lm = l[i * stride] - m;
    l[i * stride] = e[i];
    s += e[i];
    t += e[i] * vmax(lm, lowest);
  }
}

// exp_and_sums over the n vectors l[0], l[stride], .., l[(n - 1) stride]: kExpGroup<T> at a time, then 4, then one by
// one (the same values and the same order of the sums whatever the grouping). A group's exponentials are one chain of
// about 15 dependent steps each; with 4 of them the core waits on that chain (the next group's operations do not fit
// beside it in its scheduler), so double, whose chain is the longer, takes 8 at a time (the values spilled to the
// stack are loads and stores, off the arithmetic pipes): paired 0.96-0.98 of the diag float64 time, 1.015 for float32,
// which keeps 4 (docs/kernels.md).
template <typename T>
constexpr int kExpGroup = sizeof(T) == 8 ? 8 : 4;

template <typename T, typename V>
inline void exp_and_sums_all(V* __restrict l, int64_t stride, int64_t n, const V& m, V& s, V& t, const V& lowest) {
  int64_t i = 0;
  constexpr int G = kExpGroup<T>;
  if constexpr (G > 4)
    for (; i + G <= n; i += G) exp_and_sums<G>(l + i * stride, stride, m, s, t, lowest);
  for (; i + 4 <= n; i += 4) exp_and_sums<4>(l + i * stride, stride, m, s, t, lowest);
  for (; i < n; ++i) exp_and_sums<1>(l + i * stride, stride, m, s, t, lowest);
}

// Softmax of the rows [0, nr) of a tile, l [nr][KV], in place (r = e / s), their responsibilities added to nkv, and
// the row sums of log p and sum_k r log r: log p = m + log s and sum_k r log r = t / s - log s, where the logs of s
// are taken once per 16 rows from their product (s lies in [1, K]), with the binary exponent kept apart. In passes
// over the rows of the tile, each with independent rows: the row maxima m; e = exp(l - m) with the row sums s and t
// (exp_and_sums_all, kExpGroup vectors at a time); 1 / s of every row as vectors; r = e (1 / s) added to nkv (kNkBlock
// component vectors held in registers down the rows); the scalar sums, row after row. Row by row with the stages in
// sequence, each row is one chain of dependent steps (maximum, horizontal reductions, exponentials, a division),
// which the core overlaps with the next row's only as far as its out-of-order window reaches (0.93-0.96 of the
// row-by-row time, docs/kernels.md). The same operations in the same order per row as row by row, so the same bits.
constexpr int kNkBlock = 4;

// r = e (1 / s) for the component vectors kv0 .. kv0 + KB - 1 of rows [0, nr) of a tile, added to nkv (the KB sums
// held in registers down the rows).
template <int KB, typename V, typename T>
inline void scale_rows(V* __restrict l, int64_t nr, int64_t KV, int64_t kv0, const T* __restrict inv,
                       V* __restrict nkv) {
  V acc[KB];
  for (int j = 0; j < KB; ++j) acc[j] = nkv[kv0 + j];
  for (int64_t n = 0; n < nr; ++n) {
    const V iv = splat<V>(inv[n]);
    for (int j = 0; j < KB; ++j) {
      const V q = l[n * KV + kv0 + j] * iv;
      l[n * KV + kv0 + j] = q;
      acc[j] += q;
    }
  }
  for (int j = 0; j < KB; ++j) nkv[kv0 + j] = acc[j];
}

template <typename T>
void softmax_tile(typename VecOf<T>::V* __restrict l, int64_t nr, int64_t KV, typename VecOf<T>::V* __restrict nkv,
                  int64_t row0, TileScalars& sc) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = kLanes<V>;
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  const V lowest = splat<V>(std::numeric_limits<T>::lowest());
  alignas(kVecBytes) T m[kTileRows], s[kTileRows], t[kTileRows], inv[kTileRows];
  for (int64_t n = 0; n < nr; ++n) {
    const V* ln = l + n * KV;
    V a = splat<V>(ninf), b = splat<V>(ninf);
    int64_t kv = 0;
    for (; kv + 2 <= KV; kv += 2) {
      a = vmax(a, ln[kv]);
      b = vmax(b, ln[kv + 1]);
    }
    if (kv < KV) a = vmax(a, ln[kv]);
    const T mx = hmax_all(vmax(a, b))[0];
    m[n] = mx == ninf ? T(0) : mx;  // every logit -inf: log p = -inf, r = NaN
  }
  for (int64_t n = 0; n < nr; ++n) {
    V* ln = l + n * KV;
    const V mv = splat<V>(m[n]);
    V sv = V{}, tv = V{};
    exp_and_sums_all<T>(ln, 1, KV, mv, sv, tv, lowest);
    s[n] = hsum_all(sv)[0];
    t[n] = hsum_all(tv)[0];
  }
  for (int64_t n = nr; n < (nr + L - 1) / L * L; ++n) s[n] = T(1);  // lanes past the tile's last row
  for (int64_t n = 0; n < nr; n += L) vstore(inv + n, splat<V>(T(1)) / vload<V>(s + n));
  int64_t kv = 0;
  for (; kv + kNkBlock <= KV; kv += kNkBlock) scale_rows<kNkBlock>(l, nr, KV, kv, inv, nkv);
  for (; kv < KV; ++kv) scale_rows<1>(l, nr, KV, kv, inv, nkv);
  for (int64_t n = 0; n < nr; ++n) {
    sc.lp += static_cast<double>(m[n]);
    sc.rl += static_cast<double>(t[n]) * static_cast<double>(inv[n]);  // t / s through the same division
    sc.prod *= static_cast<double>(s[n]);
    if (((row0 + n) & 15) == 15) {
      int e;
      sc.prod = std::frexp(sc.prod, &e);
      sc.expo += e;
    }
  }
}

template <typename T, bool FULL>
void em_stats_impl(const Shape<T>& s, const T* x, int64_t x_bstride, const T* means, const T* prec, const T* logc,
                   T* resp, double* partial) {
  typedef typename VecOf<T>::V V;
  const int64_t N = s.N, K = s.K, D = s.D, KV = s.KV;
  const int64_t npar = s.params_per_batch();
  const std::vector<V> params = pack_all_params<T>(s, means, prec, logc);
  run_tiles<T, FULL>(s, x, x_bstride, partial,
                     [&](int64_t b, int64_t n0, int64_t nr, const T* xt, V* Lr, V* nkv, TileScalars& sc) {
    const V* W = params.data() + b * npar;
    const V* Wmu = W + s.NW * KV;
    const V* lc = Wmu + D * KV;
    tile_logits<T, FULL>(xt, nr, D, W, Wmu, lc, KV, Lr);
    softmax_tile<T>(Lr, nr, KV, nkv, n0, sc);
    if (resp != nullptr)
      for (int64_t i = 0; i < nr; ++i) {
        T* rr = resp + (b * N + n0 + i) * K;
        const T* src = reinterpret_cast<const T*>(Lr + i * KV);
        for (int64_t k = 0; k < K; ++k) rr[k] = src[k];
      }
  });
}

// ----------------------------------------------------------------------------------------------------------------
// The path for small mixtures (K <= 32 float32, K <= 8 float64). There the per-row work of the softmax (horizontal
// reductions, the scalar sums of each row) outweighs the K-proportional work, so the logits are brought into Lg
// [Kp][NV] (NV = TR / L) with the rows in the lanes: computed as above (components in the lanes, Lr [TR][KV]) and each
// L x L block transposed in registers when K is a multiple of L, else computed that way directly for the K real
// components (tile_logits_down). The softmax runs down the components of a vector of rows: no horizontal reduction,
// and the per-row sums (log p, r log r, the row sum s) stay in vectors. The statistics put the features in the lanes
// instead: the features of a row are built as vectors from the row of x (Fr [TR][RS], [x, x^2] or [x, vech(x x^T)]),
// and S[k][pv] += sum_n Fr[n][pv] r[k][n] holds a block of PVB feature vectors x KB components in registers over the
// rows of the tile, r broadcast from Lg. Tile sums are added in T to a chunk buffer, which is added to the double sums
// every kFlushTiles tiles. Same logits as em_stats_impl (the same operations in the same order); the row sums of the
// softmax, and so the responsibilities, differ from it by rounding (the sum over the components runs in another order),
// and the statistics are summed in another fixed order, so the result still does not depend on the threads. The limits
// are measured (one thread, N = 5e4..1e5, D = 8..16, against em_stats_impl): float32 K = 8, 16, 32: 0.68, 0.72, 0.89 of
// the time; K = 64: 1.03; float64 K = 8: 0.79, K = 16: 1.04, K = 32: 1.2. The transposes cost L log2 L shuffles per L x
// L block, which the cheaper float64 reductions (3 stages) do not repay.

constexpr int64_t kRowsPathBytes = 256 * 1024;  // K x P of the statistics in double, at most

template <typename T>
bool rows_path(const Shape<T>& s) {
  const int64_t max_k = sizeof(T) == 4 ? 32 : 8;  // padded components
  const int64_t Kp = s.KV * Shape<T>::L;
  return Kp <= max_k && Kp * s.P * static_cast<int64_t>(sizeof(double)) <= kRowsPathBytes;
}

constexpr int kFlushTiles = 16;  // tiles summed in T before the chunk sums in double
constexpr int kSoftVecs = kWideRegs ? 4 : 2;  // row vectors whose softmax runs interleaved (softmax_down)

// Lr [TR][KV] (rows nr and beyond: any finite value) -> Lg [Kp][NV], an L x L transpose per (row vector, component
// vector).
template <typename T>
inline void tile_to_rows(const typename VecOf<T>::V* __restrict Lr, int64_t KV, typename VecOf<T>::V* __restrict Lg) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = Shape<T>::L, NV = kTileRows / L;
  for (int64_t kv = 0; kv < KV; ++kv)
    for (int64_t v = 0; v < NV; ++v) {
      V a[L];
      for (int64_t i = 0; i < L; ++i) a[i] = Lr[(v * L + i) * KV + kv];
      transpose_block<T>(a);
      for (int64_t j = 0; j < L; ++j) Lg[(kv * L + j) * NV + v] = a[j];
    }
}

// Logits with the rows in the lanes, Lg[k][v] (lane j: row v L + j) for row vectors v0 .. v0 + RV - 1 and components
// k0 .. k0 + KB - 1, from the tile's x transposed (Xt [D][TS], tile_columns) and the parameters as scalars (the packed
// component-lane vectors read as Ws [NW][Kp], Wmus [D][Kp], lcs [Kp]): x vectors loaded, parameters broadcast. The
// operations per (row, component) and their order are those of logits_diag / logits_full, so the logits are the same.
template <typename T, bool FULL, int RV, int KB>
inline void logits_down_block(const T* __restrict Xt, int64_t D, const T* __restrict Ws, const T* __restrict Wmus,
                              const T* __restrict lcs, int64_t Kp, int64_t v0, int64_t k0,
                              typename VecOf<T>::V* __restrict Lg) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = Shape<T>::L, TS = kTileRows, NV = TS / L;
  V acc[RV][KB];
  for (int i = 0; i < RV; ++i)
    for (int j = 0; j < KB; ++j) acc[i][j] = V{};
  if (!FULL) {
    for (int64_t d = 0; d < D; ++d) {
      V xv[RV];
      for (int i = 0; i < RV; ++i) {
        xv[i] = vload<V>(Xt + d * TS + (v0 + i) * L);
        in_register(xv[i]);
      }
      for (int j = 0; j < KB; ++j) {
        const V w = splat<V>(Ws[d * Kp + k0 + j]), wm = splat<V>(Wmus[d * Kp + k0 + j]);
        for (int i = 0; i < RV; ++i) {
          const V y = y_term(w, xv[i], wm);
          acc[i][j] += y * y;
        }
      }
    }
  } else {
    for (int64_t i0 = 0; i0 < D; ++i0) {
      V y[RV][KB];
      for (int j = 0; j < KB; ++j) {
        const V wm = splat<V>(Wmus[i0 * Kp + k0 + j]);
        for (int i = 0; i < RV; ++i) y[i][j] = -wm;
      }
      const T* Wi = Ws + tri(i0, 0) * Kp + k0;
      for (int64_t c = 0; c <= i0; ++c) {
        V xv[RV];
        for (int i = 0; i < RV; ++i) {
          xv[i] = vload<V>(Xt + c * TS + (v0 + i) * L);
          in_register(xv[i]);
        }
        for (int j = 0; j < KB; ++j) {
          const V w = splat<V>(Wi[c * Kp + j]);
          for (int i = 0; i < RV; ++i) y[i][j] += w * xv[i];
        }
      }
      for (int i = 0; i < RV; ++i)
        for (int j = 0; j < KB; ++j) acc[i][j] += y[i][j] * y[i][j];
    }
  }
  for (int j = 0; j < KB; ++j) {
    const V lc = splat<V>(lcs[k0 + j]);
    for (int i = 0; i < RV; ++i) Lg[(k0 + j) * NV + v0 + i] = lc - acc[i][j] * T(0.5);
  }
}

// Logits of the K components (not the padding) for every row vector of a tile, Lg [K][NV]; rows past nr get the
// logits of whatever Xt holds there (finite), which the softmax masks.
template <typename T, bool FULL>
void tile_logits_down(const T* Xt, int64_t D, const T* Ws, const T* Wmus, const T* lcs, int64_t Kp, int64_t K,
                      typename VecOf<T>::V* Lg) {
  constexpr int64_t L = Shape<T>::L, NV = kTileRows / L;
  // registers: RV KB sums (full: and RV KB partial y), RV x vectors; half the components with 16 registers
  constexpr int RV = 4, KB = kWideRegs ? (FULL ? 2 : 4) : (FULL ? 1 : 2);
  static_assert(NV % RV == 0, "whole blocks of row vectors");
  for (int64_t v = 0; v < NV; v += RV) {
    int64_t k = 0;
    for (; k + KB <= K; k += KB) logits_down_block<T, FULL, RV, KB>(Xt, D, Ws, Wmus, lcs, Kp, v, k, Lg);
    for (; k < K; ++k) logits_down_block<T, FULL, RV, 1>(Xt, D, Ws, Wmus, lcs, Kp, v, k, Lg);
  }
}

// Running per-lane sums of a chunk (double): sum log p, sum r log r, the product of the row sums s (renormalised
// with its binary exponent every 16 vectors of rows: s lies in [1, K]). The L lanes are held as kDoubleParts double
// vectors of the register width (widen_parts; widened_lane reads lane j).
template <typename T>
struct RowScalars {
  typedef VecOf<double>::V Vd;
  static constexpr int P = kDoubleParts<typename VecOf<T>::V>;
  static constexpr int64_t Ld = kLanes<Vd>;
  Vd lp[P]{}, rl[P]{}, prod[P];
  int64_t expo = 0, groups = 0;
  RowScalars() {
    for (int p = 0; p < P; ++p) prod[p] = splat<Vd>(1.0);
  }
};

// Softmax down the K components of the RV row vectors v0 .. v0 + RV - 1 of a tile (not the padding components past
// them, whose r is 0), in place (Lg becomes r, as softmax_tile computes it); lanes of rows >= nr give r = 0 and add
// nothing to the sums. r is added to NK [K] (per lane). The RV row vectors go through each stage together: each has
// chains of K dependent maxima and sums, which one row vector alone leaves latency-bound; the exponentials of a row
// vector run kExpGroup<T> components at a time, interleaved.
template <typename T, int RV>
inline void softmax_down(typename VecOf<T>::V* __restrict Lg, int64_t K, int64_t v0, int64_t nr,
                         typename VecOf<T>::V* __restrict NK, RowScalars<T>& sc) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = Shape<T>::L, NV = kTileRows / L;
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  const V lowest = splat<V>(std::numeric_limits<T>::lowest());
  V* l = Lg + v0;
  V m[RV], sv[RV], tv[RV], inv[RV];
  for (int i = 0; i < RV; ++i) m[i] = splat<V>(ninf);
  for (int64_t k = 0; k < K; ++k)
    for (int i = 0; i < RV; ++i) m[i] = vmax(m[i], l[k * NV + i]);
  for (int i = 0; i < RV; ++i) {
    m[i] = m[i] == splat<V>(ninf) ? V{} : m[i];  // every logit -inf: log p = -inf, r = NaN
    sv[i] = V{};
    tv[i] = V{};
  }
  for (int i = 0; i < RV; ++i)  // down the components of row vector i
    exp_and_sums_all<T>(l + i, NV, K, m[i], sv[i], tv[i], lowest);
  for (int i = 0; i < RV; ++i) inv[i] = T(1) / sv[i];
  if ((v0 + RV) * L <= nr) {
    for (int64_t k = 0; k < K; ++k)
      for (int i = 0; i < RV; ++i) {
        const V q = l[k * NV + i] * inv[i];
        l[k * NV + i] = q;
        NK[k] += q;
      }
  } else {  // the short last tile of a chunk
    for (int i = 0; i < RV; ++i) {
      V lane;
      for (int64_t j = 0; j < L; ++j) lane[j] = static_cast<T>((v0 + i) * L + j);
      const auto ok = lane < splat<V>(static_cast<T>(nr));
      for (int64_t k = 0; k < K; ++k) {
        const V q = ok ? l[k * NV + i] * inv[i] : V{};
        l[k * NV + i] = q;
        NK[k] += q;
      }
      m[i] = ok ? m[i] : V{};
      tv[i] = ok ? tv[i] : V{};
      sv[i] = ok ? sv[i] : splat<V>(T(1));
    }
  }
  typedef typename RowScalars<T>::Vd Vd;
  constexpr int P = RowScalars<T>::P;
  for (int i = 0; i < RV; ++i) {
    Vd sd[P], td[P], id[P];
    add_widened(sc.lp, m[i]);
    widen_parts(sv[i], sd);
    widen_parts(tv[i], td);
    widen_parts(inv[i], id);
    for (int p = 0; p < P; ++p) {
      sc.rl[p] += td[p] * id[p];  // t / s, the same division
      sc.prod[p] *= sd[p];
    }
    if ((++sc.groups & 15) == 0)
      for (int p = 0; p < P; ++p)
        for (int64_t j = 0; j < RowScalars<T>::Ld; ++j) {
          int e;
          sc.prod[p][j] = std::frexp(sc.prod[p][j], &e);
          sc.expo += e;
        }
  }
}

// Lane selectors of the full features when a row of x fits one vector with lanes to spare (D < L; D = L takes
// rotation_products): feature vector pv is pick(A) * pick(B), where pick permutes x by an index vector (lanes i < L
// pick x_i) and then sets the lanes flagged "one" to 1 (features p < D: x_p * 1; then x_i x_c of vech; lanes past P:
// 1 * 1): pick(A) = (perm(x, A_idx) & A_keep) | A_one, with A_keep all-ones bits where x is kept and A_one the bits
// of 1.0 where it is not. A permute and two bit operations, against the two permutes, compare and blend that a
// two-source shuffle of [x, 1] compiles to. Returns [A_idx, B_idx, A_keep, B_keep, A_one, B_one], PV vectors each.
template <typename T>
std::vector<typename VecOf<T>::U> full_feature_selectors(int64_t D, int64_t P, int64_t PV) {
  typedef typename VecOf<T>::U U;
  typedef LaneOf<U> I;
  constexpr int64_t L = Shape<T>::L;
  I one_bits;
  const T one = T(1);
  std::memcpy(&one_bits, &one, sizeof(I));  // the bits of 1.0
  std::vector<U> sel(6 * PV, U{});
  for (int64_t p = 0; p < PV * L; ++p) {
    int64_t ab[2] = {L, L};
    if (p < D) {
      ab[0] = p;
    } else if (p < P) {
      untri(p - D, &ab[0], &ab[1]);
    }
    for (int s = 0; s < 2; ++s) {
      const bool takes_one = ab[s] == L;
      sel[s * PV + p / L][p % L] = static_cast<I>(takes_one ? 0 : ab[s]);
      sel[(2 + s) * PV + p / L][p % L] = takes_one ? I(0) : static_cast<I>(~I(0));
      sel[(4 + s) * PV + p / L][p % L] = takes_one ? one_bits : I(0);
    }
  }
  return sel;
}

// Full features of a row that fills one vector exactly (D = L), by rotations: [x, x * rot_0(x), .., x * rot_{L/2}(x)]
// with rot_S(x) lane j = x_{(j + S) mod L} (rotate_lanes), L / 2 + 2 vectors, the same count as vech order packed
// ([x, vech(x x^T)] has L + L (L + 1) / 2 features, and the last product's lanes L/2 .. L - 1 repeat its first half).
// Each second moment x_i x_j (j <= i) is one product, the same value as in vech order; feature_lane gives its lane.
// Against the selections: L/2 permutes with constant masks per row (full float32 D = 8: 3 permutes and a 128-bit
// lane swap, against 12 permutes, 12 bit operations and 36 mask loads).
template <typename V, typename T, std::size_t... S>
inline void rotation_products(const V& xv, T* __restrict f, std::index_sequence<S...>) {
  (vstore(f + S * kLanes<V>, xv * rotate_lanes<S>(xv)), ...);
}

// Lane of feature p (vech order: x_p for p < D, then x_i x_j at D + tri(i, j)) in a row of features: p itself, or
// with rotation products (rotations = true, D = L) lane j of product i - j if i - j <= L / 2, else lane i of product
// L - (i - j).
inline int64_t feature_lane(int64_t p, int64_t D, int64_t L, bool rotations) {
  if (!rotations || p < D) return p;
  int64_t i, j;
  untri(p - D, &i, &j);
  const int64_t g = i - j;
  return g <= L / 2 ? (1 + g) * L + j : (1 + L - g) * L + i;
}

// Features of rows [0, nr) of a tile by row: Fr[n][0 .. P) = [x_n, x_n^2] or [x_n, vech(x_n x_n^T)], from the row
// of x loaded as DV whole vectors (read past the row's end where the data continue, else through the zeroed buffer
// tmp [DV L]) and stored as whole vectors only (no load of what was just stored: a load spanning several smaller
// stores stalls). Full with D = L: [x, rotation products] (in the lanes of feature_lane, not vech order); with D < L:
// each feature vector is a product of two lane selections of [x, 1] (sel, from full_feature_selectors), stored
// aligned; otherwise each store may run past its segment into the next one, written after it, or into the row's slack
// of L lanes. Lanes [P, PV L) hold finite leftovers that only reach unused statistics.
template <typename T, bool FULL>
void tile_features_rows(const T* __restrict x, const T* xend, int64_t nr, int64_t D, int64_t RS, T* __restrict tmp,
                        const typename VecOf<T>::U* __restrict sel, T* __restrict Fr) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = Shape<T>::L;
  const int64_t DV = (D + L - 1) / L;
  constexpr int64_t MaxDV = 4;
  for (int64_t n = 0; n < nr; ++n) {
    const T* xr = x + n * D;
    if (xr + DV * L > xend) {
      std::copy(xr, xr + D, tmp);
      xr = tmp;
    }
    T* f = Fr + n * RS;
    if (!FULL || DV > MaxDV) {
      for (int64_t dv = 0; dv < DV; ++dv) vstore(f + dv * L, vload<V>(xr + dv * L));
      if (!FULL) {
        for (int64_t dv = 0; dv < DV; ++dv) {
          const V a = vload<V>(xr + dv * L);
          vstore(f + D + dv * L, a * a);
        }
      } else {
        T* q = f + D;
        for (int64_t i = 0; i < D; ++i) {
          const V xi = splat<V>(xr[i]);
          for (int64_t jv = 0; jv * L <= i; ++jv) vstore(q + jv * L, xi * vload<V>(xr + jv * L));
          q += i + 1;
        }
      }
    } else if (D == L) {  // full, x fills one register: rotation products
      const V xv = vload<V>(xr);
      vstore(f, xv);
      rotation_products(xv, f + L, std::make_index_sequence<L / 2 + 1>{});
    } else if (DV == 1) {  // full, x in one register: PV products of lane selections of [x, 1]
      typedef typename VecOf<T>::U U;
      const V xv = vload<V>(xr);
      const int64_t PV = RS / L - 1;
      for (int64_t pv = 0; pv < PV; ++pv) {
        const U a = (((U)__builtin_shuffle(xv, sel[pv]) & sel[2 * PV + pv]) | sel[4 * PV + pv]);
        const U b = (((U)__builtin_shuffle(xv, sel[PV + pv]) & sel[3 * PV + pv]) | sel[5 * PV + pv]);
        vstore(f + pv * L, (V)a * (V)b);
      }
    } else {  // full, x in at most MaxDV registers
      V xv[MaxDV];
      for (int64_t dv = 0; dv < DV; ++dv) {
        xv[dv] = vload<V>(xr + dv * L);
        vstore(f + dv * L, xv[dv]);
      }
      T* q = f + D;
      for (int64_t i = 0; i < D; ++i) {
        const V xi = splat<V>(xr[i]);
        for (int64_t jv = 0; jv * L <= i; ++jv) vstore(q + jv * L, xi * xv[jv]);
        q += i + 1;
      }
    }
  }
}

// S[k][pv] += sum_n Fr[n][pv] r[k][n] for feature vectors pv0 .. pv0 + PVB - 1 and components k0 .. k0 + KB - 1,
// summed in registers over the nr rows of the tile (r[k][n] is lane n % L of Lg[k][n / L]).
template <typename T, int PVB, int KB>
inline void stats_rows_block(const T* __restrict Fr, int64_t RS, const T* __restrict r, int64_t nr, int64_t PV,
                             int64_t pv0, int64_t k0, typename VecOf<T>::V* __restrict S) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = Shape<T>::L;
  V acc[PVB][KB];
  for (int i = 0; i < PVB; ++i)
    for (int j = 0; j < KB; ++j) acc[i][j] = V{};
  for (int64_t n = 0; n < nr; ++n) {
    V f[PVB];
    for (int i = 0; i < PVB; ++i) {
      f[i] = vload<V>(Fr + n * RS + (pv0 + i) * L);
      in_register(f[i]);
    }
    for (int j = 0; j < KB; ++j) {
      const V rb = splat<V>(r[(k0 + j) * kTileRows + n]);
      for (int i = 0; i < PVB; ++i) acc[i][j] += f[i] * rb;
    }
  }
  for (int i = 0; i < PVB; ++i)
    for (int j = 0; j < KB; ++j) S[(k0 + j) * PV + pv0 + i] += acc[i][j];
}

template <typename T, int PVB>
inline void stats_rows_k(const T* Fr, int64_t RS, const T* r, int64_t nr, int64_t PV, int64_t pv0, int64_t K,
                         typename VecOf<T>::V* S) {
  // registers: PVB KB sums and PVB feature vectors (16 registers: blocks of at most 2 feature vectors, tile_stats_rows)
  constexpr int KB = kWideRegs ? (PVB == 1 ? 12 : PVB == 2 ? 8 : 4) : (PVB == 1 ? 6 : 4);
  int64_t k = 0;
  for (; k + KB <= K; k += KB) stats_rows_block<T, PVB, KB>(Fr, RS, r, nr, PV, pv0, k, S);
  for (; k + 4 <= K; k += 4) stats_rows_block<T, PVB, 4>(Fr, RS, r, nr, PV, pv0, k, S);
  for (; k < K; ++k) stats_rows_block<T, PVB, 1>(Fr, RS, r, nr, PV, pv0, k, S);
}

template <typename T>
void tile_stats_rows(const T* Fr, int64_t RS, const typename VecOf<T>::V* Lg, int64_t nr, int64_t PV, int64_t K,
                     typename VecOf<T>::V* S) {
  const T* r = reinterpret_cast<const T*>(Lg);
  int64_t pv = 0;
  if constexpr (kWideRegs)
    for (; pv + 4 <= PV; pv += 4) stats_rows_k<T, 4>(Fr, RS, r, nr, PV, pv, K, S);
  for (; pv + 2 <= PV; pv += 2) stats_rows_k<T, 2>(Fr, RS, r, nr, PV, pv, K, S);
  for (; pv < PV; ++pv) stats_rows_k<T, 1>(Fr, RS, r, nr, PV, pv, K, S);
}

template <typename T, bool FULL>
void em_stats_rows_impl(const Shape<T>& s, const T* x, int64_t x_bstride, const T* means, const T* prec,
                        const T* logc, T* resp, double* partial) {
  typedef typename VecOf<T>::V V;
  typedef VecOf<double>::V Vd;
  constexpr int64_t L = Shape<T>::L, TS = kTileRows, NV = TS / L;
  constexpr int WP = kDoubleParts<V>;  // double vectors per vector of T (add_widened)
  static_assert(NV % kSoftVecs == 0, "a tile holds whole groups of row vectors for softmax_down");
  const int64_t N = s.N, K = s.K, D = s.D, KV = s.KV, P = s.P, Kp = KV * L;
  const int64_t PV = (P + L - 1) / L, RS = PV * L + L;  // feature vectors; row stride of Fr (with the slack)
  const int64_t npar = s.params_per_batch(), psize = s.partial_size();
  const std::vector<V> params = pack_all_params<T>(s, means, prec, logc);
  // the lane selectors of tile_features_rows, used for full covariances whose rows fit one vector
  const std::vector<typename VecOf<T>::U> sel = FULL && D < L ? full_feature_selectors<T>(D, P, PV)
                                                              : std::vector<typename VecOf<T>::U>();
  std::vector<int64_t> lane(P);  // lane of feature p in a row of Fr
  for (int64_t p = 0; p < P; ++p) lane[p] = feature_lane(p, D, L, FULL && D == L);
  parallel_tasks(s.B * s.nch, [&](auto next_task) {
    // logits: with padding components (K not a multiple of L) or diag float32, computed with the rows in the lanes,
    // components K.. Kp left out (tile_logits_down, from the tile's x transposed, Xtv [D][TS]); else with the
    // components in the lanes and transposed (tile_logits, tile_to_rows). Paired, with the operands held in registers
    // (docs/kernels.md): diag float32 K = 32 0.961 of the time down, full float32 K = 16 1.032
    const bool down = K % L != 0 || (!FULL && sizeof(T) == 4);
    std::vector<V> Lr(down ? 0 : TS * KV), Xtv(down ? D * NV : 0, V{}), Lg(Kp * NV), ST(Kp * PV), NK(Kp);
    T* const Xt = reinterpret_cast<T*>(Xtv.data());
    std::vector<V> Frv(TS * RS / L, V{});  // vectors: vector-aligned rows (RS is a multiple of L)
    std::vector<T> tmp(PV * L + L, T(0));
    T* const Fr = reinterpret_cast<T*>(Frv.data());
    std::vector<Vd> SD(Kp * PV * WP), NKD(Kp * WP);  // the chunk sums in double, WP parts per vector of T
    auto flush = [&]() {
      for (int64_t i = 0; i < Kp * PV; ++i) {
        add_widened(SD.data() + i * WP, ST[i]);
        ST[i] = V{};
      }
      for (int64_t k = 0; k < Kp; ++k) {
        add_widened(NKD.data() + k * WP, NK[k]);
        NK[k] = V{};
      }
    };
    for (int64_t task; (task = next_task()) >= 0;) {
      const int64_t b = task / s.nch, c0 = (task % s.nch) * s.CH, c1 = std::min(N, c0 + s.CH);
      const T* xb = x + b * x_bstride;
      const T* xend = xb + N * D;
      const V* W = params.data() + b * npar;
      const V* Wmu = W + s.NW * KV;
      const V* lc = Wmu + D * KV;
      std::fill(ST.begin(), ST.end(), V{});
      std::fill(NK.begin(), NK.end(), V{});
      std::fill(SD.begin(), SD.end(), Vd{});
      std::fill(NKD.begin(), NKD.end(), Vd{});
      RowScalars<T> sc;
      int tiles = 0;
      for (int64_t n0 = c0; n0 < c1; n0 += TS) {
        const int64_t nr = std::min(TS, c1 - n0);
        const T* xt = xb + n0 * D;
        if (down) {
          tile_columns<T>(xt, nr, D, Xt);
          tile_logits_down<T, FULL>(Xt, D, reinterpret_cast<const T*>(W), reinterpret_cast<const T*>(Wmu),
                                    reinterpret_cast<const T*>(lc), Kp, K, Lg.data());
        } else {
          tile_logits<T, FULL>(xt, nr, D, W, Wmu, lc, KV, Lr.data());
          if (nr < TS) std::fill(Lr.begin() + nr * KV, Lr.end(), V{});  // finite logits for the rows past the end
          tile_to_rows<T>(Lr.data(), KV, Lg.data());
        }
        // the padding components (logit -inf, r = 0) are left out of the softmax and the statistics; their NK, ST
        // stay 0
        for (int64_t v = 0; v < NV; v += kSoftVecs) softmax_down<T, kSoftVecs>(Lg.data(), K, v, nr, NK.data(), sc);
        if (resp != nullptr) {
          const T* rs = reinterpret_cast<const T*>(Lg.data());
          for (int64_t i = 0; i < nr; ++i) {
            T* rr = resp + (b * N + n0 + i) * K;
            for (int64_t k = 0; k < K; ++k) rr[k] = rs[k * TS + i];
          }
        }
        tile_features_rows<T, FULL>(xt, xend, nr, D, RS, tmp.data(), sel.data(), Fr);
        tile_stats_rows<T>(Fr, RS, Lg.data(), nr, PV, K, ST.data());
        if (++tiles == kFlushTiles) {
          flush();
          tiles = 0;
        }
      }
      flush();
      double logs = static_cast<double>(sc.expo) * 0.69314718055994530942, lp = 0, rl = 0;
      for (int64_t j = 0; j < L; ++j) {
        logs += std::log(widened_lane(sc.prod, j));
        lp += widened_lane(sc.lp, j);
        rl += widened_lane(sc.rl, j);
      }
      double* out = partial + task * psize;
      out[0] = lp + logs;
      out[1] = rl - logs;
      double* nko = out + 2;
      double* So = nko + Kp;
      for (int64_t k = 0; k < Kp; ++k) {
        double a = 0;
        for (int64_t j = 0; j < L; ++j) a += widened_lane(NKD.data() + k * WP, j);
        nko[k] = a;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t v = k * PV + lane[p] / L, j = lane[p] % L;
          So[p * Kp + k] = widened_lane(SD.data() + v * WP, j);
        }
      }
    }
  });
}

// One pass into raw outputs: lp, rl [B] (either may be null), nk [B, K], sx [B, K, D], sxx [B, K, D] or [B, K, D, D];
// resp [B, N, K] or null; partial holds B nch partial_size() doubles.
template <typename T>
void em_stats_into(const Shape<T>& s, const T* x, int64_t x_bstride, const T* means, const T* prec, const T* logc,
                   T* resp, double* partial, T* lp, T* rl, T* nk, T* sx, T* sxx) {
  auto* impl = rows_path(s) ? (s.full ? &em_stats_rows_impl<T, true> : &em_stats_rows_impl<T, false>)
                            : (s.full ? &em_stats_impl<T, true> : &em_stats_impl<T, false>);
  impl(s, x, x_bstride, means, prec, logc, resp, partial);
  reduce_partials<T>(s, partial, lp, rl, nk, sx, sxx);
}

// every chunk writes all of its partial sums: no zero fill (it cost tens of microseconds per call)
template <typename T>
std::unique_ptr<double[]> partial_buffer(const Shape<T>& s) {
  return std::unique_ptr<double[]>(new double[std::max<int64_t>(1, s.B * s.nch * s.partial_size())]);
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
    const auto partial = partial_buffer(s);
    em_stats_into<scalar_t>(s, xc.const_data_ptr<scalar_t>(), batch_stride(xc), mc.const_data_ptr<scalar_t>(),
                            pc.const_data_ptr<scalar_t>(), cc.const_data_ptr<scalar_t>(),
                            with_resp ? resp.data_ptr<scalar_t>() : nullptr, partial.get(), lp.data_ptr<scalar_t>(),
                            rl.data_ptr<scalar_t>(), nk.data_ptr<scalar_t>(), sx.data_ptr<scalar_t>(),
                            sxx.data_ptr<scalar_t>());
  });
  return {lp, rl, nk, sx, sxx, resp};
}

}  // namespace
}  // namespace gmmkernels

namespace gmmkernels {
namespace {

// The M-step of every component into raw outputs (the shapes of mstep_outputs; ok [B, K]): the weights' normaliser
// of each mixture, then the components in parallel (each the shared header's mstep_component: O(D^3) for full
// covariances, with row-wise inner loops the compiler vectorises). Returns whether every component is ok.
template <typename T>
bool mstep_into(int64_t B, int64_t K, int64_t D, int64_t cov_kind, double reg_covar, const T* n, const T* s1,
                const T* s2p, T* lg, T* mu, T* scl, T* W, T* lc, bool* okp) {
  namespace M = mixture_em_stats;
  const bool full = cov_kind == M::kFull;
  const int64_t s2 = full ? D * D : D, sc = full ? D * D : cov_kind == M::kSpherical ? 1 : D;
  const T eps = T(10) * std::numeric_limits<T>::epsilon();
  const bool low = !std::is_same<T, double>::value;
  std::vector<T> total(B);
  for (int64_t b = 0; b < B; ++b) total[b] = M::mstep_total(n + b * K, K, eps);
  const int64_t grain = std::max<int64_t>(1, 4096 / (full ? D * D * D + 1 : 4 * D + 1));
  at::parallel_for(0, B * K, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t b = q / K;
      okp[q] = M::mstep_component<T>(n[q], s1 + q * D, s2p + q * s2, D, static_cast<int>(cov_kind), low,
                                     static_cast<T>(reg_covar), eps, total[b], lg + q, mu + q * D, scl + q * sc,
                                     W + q * s2, lc + q);
    }
  });
  return std::all_of(okp, okp + B * K, [](bool v) { return v; });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_em_mstep_cpu(
    const at::Tensor& nk, const at::Tensor& sx, const at::Tensor& sxx, int64_t cov_kind, double reg_covar) {
  namespace M = mixture_em_stats;
  const auto z = M::check_mstep_inputs(nk, sx, sxx, cov_kind, reg_covar, c10::DeviceType::CPU);
  auto out = M::mstep_outputs(z, cov_kind, nk.options());
  auto& [logits, means, scale, prec, logc, ok] = out;
  auto nkc = nk.contiguous(), sxc = sx.contiguous(), sxxc = sxx.contiguous();
  AT_DISPATCH_FLOATING_TYPES(nk.scalar_type(), "mixture_em_mstep_cpu", [&] {
    mstep_into<scalar_t>(z.B, z.K, z.D, cov_kind, reg_covar, nkc.const_data_ptr<scalar_t>(),
                         sxc.const_data_ptr<scalar_t>(), sxxc.const_data_ptr<scalar_t>(), logits.data_ptr<scalar_t>(),
                         means.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), prec.data_ptr<scalar_t>(),
                         logc.data_ptr<scalar_t>(), ok.data_ptr<bool>());
  });
  return out;
}

// The loop of mixture_em_stats::em_iterate (mixture_em_stats_iterate.h) on raw buffers allocated once: the pass and
// the M-step write into them and the lower bound and the convergence flags are plain loops, so an iteration calls
// no ATen operator. After a pass of a large data set, the few small ATen operators of the generic loop ran from
// evicted caches and took 40-140 us per iteration. The same operations in the same dtype as the generic loop: lb =
// lp / T(n), converged where |lb - lower| < T(tol). Two sets of parameters: the M-step writes the next one, which
// becomes the current one when the iteration is kept.
mixture_em_stats::Tensors8 mixture_em_iterate_cpu(const at::Tensor& x, const at::Tensor& logits,
                                                   const at::Tensor& means, const at::Tensor& scale,
                                                   const at::Tensor& prec, const at::Tensor& logc,
                                                   const at::Tensor& lower, int64_t cov_kind, double reg_covar,
                                                   double tol, int64_t max_iter, double n) {
  namespace M = mixture_em_stats;
  const Sizes z = M::check_iterate_inputs(x, logits, means, scale, prec, logc, lower, cov_kind, reg_covar, tol,
                                          max_iter, n, c10::DeviceType::CPU);
  const int64_t B = z.B, K = z.K, D = z.D;
  const bool full = cov_kind == M::kFull;
  const auto fresh = [](const at::Tensor& t) { return t.clone(at::MemoryFormat::Contiguous); };
  // the current parameters (logits, means, scale, prec, logc) and the M-step's outputs
  std::array<at::Tensor, 5> cur = {fresh(logits), fresh(means), fresh(scale), fresh(prec), fresh(logc)}, next;
  at::Tensor ok;
  std::tie(next[0], next[1], next[2], next[3], next[4], ok) = M::mstep_outputs({B, K, D}, cov_kind, x.options());
  at::Tensor lo = fresh(lower), conv = at::zeros({B}, lower.options().dtype(at::kBool));
  const at::Tensor xc = x.contiguous();
  int64_t kept = 0, why = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_em_iterate_cpu", [&] {
    using T = scalar_t;
    const Shape<T> s(B, z.N, K, D, full);
    const auto partial = partial_buffer(s);
    std::vector<T> lp(B), lb(B), nk(B * K), sx(B * K * D), sxx(B * K * (full ? D * D : D));
    std::vector<char> c(B);
    T* const lop = lo.data_ptr<T>();
    bool* const cv = conv.data_ptr<bool>();
    const auto ptr = [](at::Tensor& t) { return t.data_ptr<T>(); };
    for (int64_t it = 1; it <= max_iter; ++it) {
      em_stats_into<T>(s, xc.const_data_ptr<T>(), batch_stride(xc), ptr(cur[1]), ptr(cur[3]), ptr(cur[4]), nullptr,
                       partial.get(), lp.data(), nullptr, nk.data(), sx.data(), sxx.data());
      const bool all_ok = mstep_into<T>(B, K, D, cov_kind, reg_covar, nk.data(), sx.data(), sxx.data(), ptr(next[0]),
                                        ptr(next[1]), ptr(next[2]), ptr(next[3]), ptr(next[4]), ok.data_ptr<bool>());
      bool any = false;
      for (int64_t b = 0; b < B; ++b) {
        lb[b] = lp[b] / static_cast<T>(n);
        c[b] = std::abs(lb[b] - lop[b]) < static_cast<T>(tol);
        any = any || c[b];
      }
      if (!all_ok) {
        why = 2;
        break;
      }
      std::swap(cur, next);
      for (int64_t b = 0; b < B; ++b) {
        lop[b] = lb[b];
        cv[b] = c[b];
      }
      kept = it;
      if (any) {
        why = 1;
        break;
      }
    }
  });
  at::Tensor counts = at::tensor({kept, why}, at::TensorOptions().dtype(at::kLong));
  return {cur[0], cur[1], cur[2], cur[3], cur[4], lo, conv, counts};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) {
  m.impl("mixture_em_stats", &gmmkernels::mixture_em_stats_cpu);
  m.impl("mixture_em_mstep", &gmmkernels::mixture_em_mstep_cpu);
  m.impl("mixture_em_iterate", &gmmkernels::mixture_em_iterate_cpu);
}
