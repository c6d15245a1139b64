// The tiled one-pass E-step + statistics machinery of the CPU kernels mixture_em_stats and mixture_suffstats
// (host only; torch's ATen/Parallel.h for the threads): the shape bookkeeping, the features of a tile, the statistics
// product S[p][k] += sum_n F[p][n] r[n][k] in registers, the chunk driver (chunks handed out to the threads one at a
// time) and the ordered reduction of the chunk partial sums. The two ops differ only in where a tile's
// responsibilities come from (computed from the mixture, or read from the input): the callback of run_tiles.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "gmmkernels/cpu_vec.h"
#include "gmmkernels/mixture_em_stats.h"

namespace gmmkernels {
namespace cpu {

using mixture_em_stats::second_moments;
using mixture_em_stats::tri;

constexpr int64_t kTileRows = 64;   // rows per tile (TR)
constexpr int64_t kMaxChunks = 64;  // chunks per data set, at most
constexpr int kPB = kWideRegs ? 8 : 4;  // feature columns per register block of the statistics product (2 kPB sums)

template <typename T>
struct Shape {
  typedef typename VecOf<T>::V V;
  static constexpr int64_t L = sizeof(V) / sizeof(T);
  int64_t B, N, K, D;
  bool full;
  int64_t KV;   // component vectors: ceil(K / L)
  int64_t NW;   // weight vectors per component lane: D (diag) or D (D + 1) / 2 (full)
  int64_t P;    // feature columns: D + second_moments(D, full)
  int64_t Pp;   // P rounded up to a multiple of kPB (zero columns)
  int64_t CH;   // rows per chunk
  int64_t nch;  // chunks per data set
  Shape(int64_t B_, int64_t N_, int64_t K_, int64_t D_, bool full_) : B(B_), N(N_), K(K_), D(D_), full(full_) {
    KV = (K + L - 1) / L;
    NW = full ? D * (D + 1) / 2 : D;
    P = D + second_moments(D, full);
    Pp = (P + kPB - 1) / kPB * kPB;
    const int64_t per = (N + kMaxChunks - 1) / kMaxChunks;
    CH = std::max<int64_t>(4 * kTileRows, (per + kTileRows - 1) / kTileRows * kTileRows);
    nch = (N + CH - 1) / CH;
  }
  int64_t params_per_batch() const { return (NW + D + 1) * KV; }  // vectors: W [NW][KV], Wmu [D][KV], logc [KV]
  int64_t partial_size() const { return 2 + KV * L + P * KV * L; }  // lp, sum r log r, nk [Kp], S [P][Kp]
};

// x of rows [0, nr) of a tile transposed: F[d][n] (column stride kTileRows), whole L x L blocks through registers
// (transpose_block), the rest lane by lane (rows >= nr of a short tile keep what they held).
template <typename T>
void tile_columns(const T* __restrict x, int64_t nr, int64_t D, T* __restrict F) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = sizeof(V) / sizeof(T);
  constexpr int64_t TS = kTileRows;
  static_assert(TS % L == 0, "a tile holds whole vectors of rows");
  const int64_t nb = nr / L * L, db = D / L * L;
  for (int64_t n = 0; n < nb; n += L)
    for (int64_t d = 0; d < db; d += L) {
      V a[L];
      for (int64_t i = 0; i < L; ++i) a[i] = vload<V>(x + (n + i) * D + d);
      transpose_block<T>(a);
      for (int64_t j = 0; j < L; ++j) vstore(F + (d + j) * TS + n, a[j]);
    }
  for (int64_t n = 0; n < nr; ++n)
    for (int64_t d = n < nb ? db : 0; d < D; ++d) F[d * TS + n] = x[n * D + d];
}

// Features of rows [0, nr) of a tile. Diag: stored by row, F[n][p] (row stride Pp) = [x_n, x_n^2], each row computed
// from the row of x as it is stored (no transpose). Full: stored by feature, F[p][n] (column stride kTileRows) with
// F[0 .. D) = x transposed (tile_columns), then x_i x_j for j <= i in vech order, each computed as whole vectors over the
// rows. Rows >= nr of a short tile hold stale values that the statistics never read; the padding features [P, Pp)
// stay zero from the allocation. feature_strides gives (feature stride, row stride) of the layout.
template <bool FULL>
constexpr std::pair<int64_t, int64_t> feature_strides(int64_t Pp) {
  return FULL ? std::pair<int64_t, int64_t>{kTileRows, 1} : std::pair<int64_t, int64_t>{1, Pp};
}

template <typename T, bool FULL>
void tile_features(const T* __restrict x, int64_t nr, int64_t D, int64_t Pp, T* __restrict F) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = sizeof(V) / sizeof(T);
  constexpr int64_t TS = kTileRows;
  if (!FULL) {
    for (int64_t n = 0; n < nr; ++n) {
      const T* xn = x + n * D;
      T* f = F + n * Pp;
      for (int64_t d = 0; d < D; ++d) {
        f[d] = xn[d];
        f[D + d] = xn[d] * xn[d];
      }
    }
    return;
  }
  tile_columns<T>(x, nr, D, F);
  const int64_t nv = (nr + L - 1) / L;
  T* q = F + D * TS;
  for (int64_t i = 0; i < D; ++i) {
    const T* xi = F + i * TS;
    for (int64_t j = 0; j <= i; ++j, q += TS) {
      const T* xj = F + j * TS;
      for (int64_t v = 0; v < nv; ++v) vstore(q + v * L, vload<V>(xi + v * L) * vload<V>(xj + v * L));
    }
  }
}

// S[p][kv] += sum_n F[p][n] r[n][kv] for feature columns p0 .. p0 + PB - 1 and component vectors kv0 .. kv0 + KVB - 1,
// summed in registers over the nr rows of the tile, then added to the chunk accumulator (widened to double for float).
// F[p][n] is read at F + p sp + n sn (feature_strides).
template <typename T, int PB, int KVB>
inline void stats_block(const T* __restrict F, int64_t sp, int64_t sn, const typename VecOf<T>::V* __restrict R,
                        int64_t KV, int64_t nr, int64_t p0, int64_t kv0, typename VecOf<T>::W* __restrict S) {
  typedef typename VecOf<T>::V V;
  typedef typename VecOf<T>::W Wd;
  V acc[PB][KVB];
  for (int i = 0; i < PB; ++i)
    for (int j = 0; j < KVB; ++j) acc[i][j] = V{};
  for (int64_t n = 0; n < nr; ++n) {
    V r[KVB];
    for (int j = 0; j < KVB; ++j) {
      r[j] = R[n * KV + kv0 + j];
      in_register(r[j]);
    }
    const T* f = F + p0 * sp + n * sn;
    for (int i = 0; i < PB; ++i) {
      const V fv = splat<V>(f[i * sp]);
      for (int j = 0; j < KVB; ++j) acc[i][j] += fv * r[j];
    }
  }
  for (int i = 0; i < PB; ++i)
    for (int j = 0; j < KVB; ++j) S[(p0 + i) * KV + kv0 + j] += __builtin_convertvector(acc[i][j], Wd);
}

template <typename T, int PB>
inline void stats_columns(const T* F, int64_t sp, int64_t sn, const typename VecOf<T>::V* R, int64_t KV, int64_t nr,
                          int64_t p0, typename VecOf<T>::W* S) {
  // 16 registers: blocks of 3 component vectors (3 PB sums, 3 r, 1 broadcast feature: 7 loads per 12 FMAs against
  // 6 per 8 for blocks of 2) while neither 4 nor fewer than 3 remain, then 2; 32 registers: blocks of 2
  constexpr int KVB = kWideRegs ? 2 : 3;
  int64_t kv = 0;
  if constexpr (KVB == 3)
    for (; KV - kv >= 3 && KV - kv != 4; kv += 3) stats_block<T, PB, 3>(F, sp, sn, R, KV, nr, p0, kv, S);
  for (; kv + 2 <= KV; kv += 2) stats_block<T, PB, 2>(F, sp, sn, R, KV, nr, p0, kv, S);
  for (; kv < KV; ++kv) stats_block<T, PB, 1>(F, sp, sn, R, KV, nr, p0, kv, S);
}

// Feature columns [0, P) in blocks of kPB; a last block of 1 to kPB / 2 columns takes a half-width block (the columns
// past P that a block reads are the zero padding of F, and their sums go to rows of S that are never read).
template <typename T, bool FULL>
void tile_stats(const T* F, const typename VecOf<T>::V* R, int64_t KV, int64_t nr, int64_t P, int64_t Pp,
                typename VecOf<T>::W* S) {
  const auto [sp, sn] = feature_strides<FULL>(Pp);
  int64_t p0 = 0;
  for (; p0 + kPB / 2 < P; p0 += kPB) stats_columns<T, kPB>(F, sp, sn, R, KV, nr, p0, S);
  if (p0 < P) stats_columns<T, kPB / 2>(F, sp, sn, R, KV, nr, p0, S);
}

// Flush-to-zero and denormals-are-zero on the calling thread for the guard's lifetime (x86: the FTZ and DAZ bits of
// MXCSR, restored on exit; elsewhere nothing). In the pass, responsibilities below the smallest normal number and
// their products with the features arise wherever a component is far from the rows of a tile (exp of the logit gap
// down to about -87 in float32), and each vector instruction that meets one takes a microcode assist on x86 cores
// (the diag float32 pass of the README's headline case took 0.854 of its time with the flush, paired A/B in
// docs/kernels.md). Flushed, such a value becomes 0: a change below 1.2e-38 (float32; 2.2e-308 float64) in absolute
// value per term.
class FlushDenormals {
 public:
#if defined(__SSE2__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#else
  FlushDenormals() {}
#endif
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

// Runs f(next) once on each of up to at::get_num_threads() intra-op threads, each under FlushDenormals; next() hands
// out the tasks [0, ntasks) one at a time from a shared counter and returns -1 when none is left. Against
// at::parallel_for's equal static ranges, a thread slowed by something else on the machine takes fewer tasks instead
// of holding up the pass. f allocates its thread's scratch once; each task writes only its own outputs, so the result
// does not depend on which thread ran it.
template <typename F>
void parallel_tasks(int64_t ntasks, F&& f) {
  std::atomic<int64_t> counter{0};
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), ntasks));
  at::parallel_for(0, slots, 1, [&](int64_t, int64_t) {
    const FlushDenormals ftz;
    f([&]() -> int64_t {
      const int64_t t = counter.fetch_add(1, std::memory_order_relaxed);
      return t < ntasks ? t : -1;
    });
  });
}

// Running scalars of a chunk: sum log p, sum r log r and the product of the row sums s (with its binary exponent);
// mixture_suffstats leaves them at their start values.
struct TileScalars {
  double lp = 0, rl = 0, prod = 1;
  int64_t expo = 0;
};

// The pass over every (data set, chunk): for each tile of kTileRows rows, tile_resp(b, n0, nr, x_tile, Lr, nkv,
// scalars) writes the responsibilities of the rows into Lr [nr][KV] (component lanes, padding lanes 0) and adds them
// to nkv; then the features and the statistics of the tile. Each chunk writes its partial sums (partial_size()
// doubles) to partial[b * nch + c]; chunks depend on N only, so the result does not depend on the threads.
template <typename T, bool FULL, typename TileResp>
void run_tiles(const Shape<T>& s, const T* x, int64_t x_bstride, double* partial, TileResp&& tile_resp) {
  typedef typename VecOf<T>::V V;
  typedef typename VecOf<T>::W Wd;
  constexpr int64_t L = Shape<T>::L;
  const int64_t N = s.N, D = s.D, KV = s.KV, P = s.P, Pp = s.Pp;
  const int64_t psize = s.partial_size();
  parallel_tasks(s.B * s.nch, [&](auto next_task) {
    std::vector<V> Lr(kTileRows * KV), nkv(KV);
    std::vector<V> Fv(Pp * kTileRows / L, V{});  // vectors: vector-aligned feature rows
    T* const F = reinterpret_cast<T*>(Fv.data());
    std::vector<Wd> S(Pp * KV), nks(KV);
    for (int64_t task; (task = next_task()) >= 0;) {
      const int64_t b = task / s.nch, c0 = (task % s.nch) * s.CH, c1 = std::min(N, c0 + s.CH);
      const T* xb = x + b * x_bstride;
      std::fill(S.begin(), S.end(), Wd{});
      std::fill(nks.begin(), nks.end(), Wd{});
      TileScalars sc;
      for (int64_t n0 = c0; n0 < c1; n0 += kTileRows) {
        const int64_t nr = std::min(kTileRows, c1 - n0);
        const T* xt = xb + n0 * D;
        std::fill(nkv.begin(), nkv.end(), V{});
        tile_resp(b, n0, nr, xt, Lr.data(), nkv.data(), sc);
        for (int64_t kv = 0; kv < KV; ++kv) nks[kv] += __builtin_convertvector(nkv[kv], Wd);
        tile_features<T, FULL>(xt, nr, D, Pp, F);
        tile_stats<T, FULL>(F, Lr.data(), KV, nr, P, Pp, S.data());
      }
      const double logs = std::log(sc.prod) + static_cast<double>(sc.expo) * 0.69314718055994530942;
      double* out = partial + task * psize;
      out[0] = sc.lp + logs;
      out[1] = sc.rl - logs;
      double* nko = out + 2;
      for (int64_t kv = 0; kv < KV; ++kv)
        for (int64_t j = 0; j < L; ++j) nko[kv * L + j] = nks[kv][j];
      double* So = nko + KV * L;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t kv = 0; kv < KV; ++kv)
          for (int64_t j = 0; j < L; ++j) So[(p * KV + kv) * L + j] = S[p * KV + kv][j];
    }
  });
}

// Sum of the chunk partials of each data set in chunk order, into the outputs (lp and rl may be null: the
// statistics only). The sums are cut into ranges of the partial vector across the threads, so that the sums of a
// single data set run in parallel too; every sum adds the same chunks in the same order whatever the cut.
template <typename T>
void reduce_partials(const Shape<T>& s, const double* partial, T* lp, T* rl, T* nk, T* sx, T* sxx) {
  constexpr int64_t L = Shape<T>::L;
  const int64_t K = s.K, D = s.D, Kp = s.KV * L, psize = s.partial_size(), nch = s.nch;
  std::vector<double> sums(s.B * psize);
  at::parallel_for(0, s.B * psize, 128, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi;) {  // the part [i0, i1) of data set b's sums
      const int64_t b = q / psize, i0 = q % psize, i1 = std::min(psize, i0 + (hi - q));
      double* acc = sums.data() + b * psize;
      std::fill(acc + i0, acc + i1, 0.0);
      for (int64_t c = 0; c < nch; ++c) {
        const double* p = partial + (b * nch + c) * psize;
        for (int64_t i = i0; i < i1; ++i) acc[i] += p[i];
      }
      q += i1 - i0;
    }
  });
  at::parallel_for(0, s.B, 1, [&](int64_t b0, int64_t b1) {  // one data set runs inline
    for (int64_t b = b0; b < b1; ++b) {
      const double* acc = sums.data() + b * psize;
      if (lp != nullptr) lp[b] = static_cast<T>(acc[0]);
      if (rl != nullptr) rl[b] = static_cast<T>(acc[1]);
      const double* nka = acc + 2;
      const double* Sa = nka + Kp;
      for (int64_t k = 0; k < K; ++k) {
        nk[b * K + k] = static_cast<T>(nka[k]);
        for (int64_t d = 0; d < D; ++d) sx[(b * K + k) * D + d] = static_cast<T>(Sa[d * Kp + k]);
        if (!s.full) {
          for (int64_t d = 0; d < D; ++d) sxx[(b * K + k) * D + d] = static_cast<T>(Sa[(D + d) * Kp + k]);
        } else {
          T* o = sxx + (b * K + k) * D * D;
          for (int64_t i = 0; i < D; ++i)
            for (int64_t j = 0; j <= i; ++j) {
              const T v = static_cast<T>(Sa[(D + tri(i, j)) * Kp + k]);
              o[i * D + j] = v;
              o[j * D + i] = v;
            }
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace gmmkernels
