// The CUDA kernels of mixture_em_stats as block programs (gmmkernels/block_program.h): launched on a GPU by
// csrc/cuda/mixture_em_stats_kernels.cu and run on CPU threads by csrc/simt/mixture_em_stats.cpp, which the tests
// compare with the float64 reference. Maths in gmmkernels/mixture_em_stats.h; docs/kernels.md (mixture_em_stats).
//
// K <= 32 (one tile of components): one pass over the data.
//   EMStatsBlock<ONE = true>: block = (all components, 256 features, one split of the rows), 256 threads. Per tile
//   of 32 rows: the logits of (row, 4 components) per thread, the row's log-sum-exp across the block's 8 groups of
//   components (max, then sums, through shared memory), r = exp(l - log p) to shared memory, then each thread adds
//   r[row][4 components] x F[row][8 features] to 32 register accumulators. The block also sums log p and r log r
//   of its rows (fixed-order tree).
// K > 32: two passes over the data.
//   1. LseDiagBlock / LseFullBlock: one thread per row, 128 rows per block, all K components in tiles (diag: the 32
//      logits of a tile in registers, x and the parameters staged in shared memory 32 dimensions at a time; full:
//      the row in registers, 16 components' triangles staged at a time). Online log-sum-exp with the entropy term:
//      log p_n to the workspace, and the block's sums of log p and r log r (fixed-order tree).
//   2. EMStatsBlock<ONE = false>: as above, per tile of 32 components, with log p read from the workspace.
// Then ReduceBlock adds the partial sums in split order (no atomics; every split depends on the shapes only, so the
// results are bitwise reproducible across runs and GPUs) and unpacks them into nk, sx, sxx, lp, rl; RespBlock writes
// resp = exp(l - log p) only when it is asked for. The N x K responsibilities never reach global memory otherwise.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "gmmkernels/block_program.h"
#include "gmmkernels/mixture_em_stats.h"

namespace gmmkernels {
namespace mixture_em_stats {

constexpr int kRows1 = 128;  // pass 1: rows (threads) per block
constexpr int kTK1 = 32;     // pass 1 (diag): components per register tile
constexpr int kDT = 32;      // dimensions per staged chunk (diag)
constexpr int kKF = 16;      // pass 1 (full): components staged at a time
constexpr int kTK2 = 32;     // statistics: components per block
constexpr int kKQ = kTK2 / 4;  // statistics: groups of 4 components (threads per row)
constexpr int kPT = 256;     // statistics: features per block
constexpr int kTM2 = 32;     // statistics: rows per tile
constexpr int kThreads2 = kTM2 * kKQ;
constexpr int kMD = static_cast<int>(kEMStatsMaxFullD);
constexpr int kMT = kMD * (kMD + 1) / 2;
constexpr int64_t kTargetBlocks2 = 1024;  // statistics blocks to aim for (an H100 has 132 SMs)
static_assert(kThreads2 == 256 && kPT == kThreads2 / 8 * 8, "statistics: 256 threads of 4 components x 8 features");

struct ExpFn {
  GMMK_HD float operator()(float v) const { return expf(v); }
  GMMK_HD double operator()(double v) const { return exp(v); }
};
GMMK_HD float dlog(float v) { return logf(v); }
GMMK_HD double dlog(double v) { return log(v); }

// Four consecutive values from 16-byte aligned shared memory (vector loads on the GPU).
GMMK_DEV void load4(const float* p, float* o) {
#if defined(__CUDA_ARCH__)
  const float4 v = *reinterpret_cast<const float4*>(p);
  o[0] = v.x;
  o[1] = v.y;
  o[2] = v.z;
  o[3] = v.w;
#else
  for (int i = 0; i < 4; ++i) o[i] = p[i];
#endif
}
GMMK_DEV void load4(const double* p, double* o) {
#if defined(__CUDA_ARCH__)
  const double2 a = *reinterpret_cast<const double2*>(p), c = *reinterpret_cast<const double2*>(p + 2);
  o[0] = a.x;
  o[1] = a.y;
  o[2] = c.x;
  o[3] = c.y;
#else
  for (int i = 0; i < 4; ++i) o[i] = p[i];
#endif
}

// n elements rounded up to a multiple of 4 (16-byte aligned regions for load4)
constexpr int round4(int n) { return (n + 3) & ~3; }

// Fixed-order tree sum of a[0 .. n) and c[0 .. n) (n a power of 2, threads 0 .. n / 2 work) into out[0], out[1],
// written by thread 0 when `write`.
template <typename T, class Blk>
GMMK_DEV void block_sum2(const Blk& blk, T* a, T* c, int n, T* out, bool write) {
  const int t = blk.tid();
  for (int h = n / 2; h > 0; h /= 2) {
    blk.sync();
    if (t < h) {
      a[t] += a[t + h];
      c[t] += c[t + h];
    }
  }
  if (t == 0 && write) {
    out[0] = a[0];
    out[1] = c[0];
  }
}

// log p and r log r of a finished row (pass 1), into the block's reduction buffers (0 for rows past N).
template <typename T>
GMMK_DEV void finish_row(const OnlineLSE2<T>& st, bool valid, T* logz_n, T* red_lp, T* red_rl, int t) {
  T lp = T(0), rl = T(0);
  if (valid) {
    const T ls = dlog(st.s);
    lp = st.m + ls;
    rl = st.t / st.s - ls;
    *logz_n = lp;
  }
  red_lp[t] = lp;
  red_rl[t] = rl;
}

// Arguments of the pass-1 programs.
template <typename T>
struct LseParams {
  const T* x;
  int64_t x_bstride;
  const T* W;
  const T* wmu;
  const T* logc;
  int N, K, D;
  T* logz;
  T* part1;
};

// Pass 1, diagonal covariances: grid (row blocks, B).
template <typename T>
struct LseDiagBlock {
  static constexpr int kThreads = kRows1;
  static constexpr int DT = sizeof(T) == 8 ? kDT / 2 : kDT;  // dimensions staged at a time
  using Params = LseParams<T>;
  // [DT][kRows1 + 1] x, [DT][kTK1] W and W mu, [2][kRows1] reduction
  static constexpr int kXS = round4(DT * (kRows1 + 1)), kWS = kXS, kMS = kWS + DT * kTK1, kRed = kMS + DT * kTK1,
                       kTotal = kRed + 2 * kRows1;
  static size_t smem_bytes(const Params&) { return sizeof(T) * kTotal; }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char* smem, const Params& p) {
    T* sm = reinterpret_cast<T*>(smem);
    T* xs = sm;
    T* ws = sm + kWS;
    T* ms = sm + kMS;
    T* red = sm + kRed;
    const int N = p.N, K = p.K, D = p.D;
    const int b = (int)blk.block().y, t = blk.tid(), n0 = (int)blk.block().x * kRows1, n = n0 + t;
    const T* xb = p.x + b * p.x_bstride;
    const T* Wb = p.W + (int64_t)b * K * D;
    const T* mb = p.wmu + (int64_t)b * K * D;
    const T* cb = p.logc + (int64_t)b * K;
    OnlineLSE2<T> st;
    st.init();
    for (int k0 = 0; k0 < K; k0 += kTK1) {
      T acc[kTK1];
GMMK_UNROLL
      for (int j = 0; j < kTK1; ++j) acc[j] = T(0);
      for (int d0 = 0; d0 < D; d0 += DT) {
        blk.sync();
        for (int i = t; i < kRows1 * DT; i += kRows1) {
          const int r = i / DT, dd = i % DT, nn = n0 + r, d = d0 + dd;
          xs[dd * (kRows1 + 1) + r] = (nn < N && d < D) ? xb[(int64_t)nn * D + d] : T(0);
        }
        for (int i = t; i < DT * kTK1; i += kRows1) {
          const int j = i / DT, dd = i % DT, k = k0 + j, d = d0 + dd;
          const bool ok = k < K && d < D;
          ws[dd * kTK1 + j] = ok ? Wb[(int64_t)k * D + d] : T(0);
          ms[dd * kTK1 + j] = ok ? mb[(int64_t)k * D + d] : T(0);
        }
        blk.sync();
        const int dmax = imin(DT, D - d0);
        for (int dd = 0; dd < dmax; ++dd) {
          const T xv = xs[dd * (kRows1 + 1) + t];
GMMK_UNROLL
          for (int j = 0; j < kTK1; j += 4) {
            T w[4], m[4];
            load4(ws + dd * kTK1 + j, w);
            load4(ms + dd * kTK1 + j, m);
GMMK_UNROLL
            for (int q = 0; q < 4; ++q) {
              const T y = y_term(w[q], xv, m[q]);
              acc[j + q] += y * y;
            }
          }
        }
      }
GMMK_UNROLL
      for (int j = 0; j < kTK1; ++j)
        if (k0 + j < K) st.push(cb[k0 + j] - acc[j] * T(0.5), ExpFn());
    }
    finish_row(st, n < N, p.logz + (int64_t)b * N + n, red, red + kRows1, t);
    block_sum2(blk, red, red + kRows1, kRows1, p.part1 + ((int64_t)b * blk.grid().x + blk.block().x) * 2, true);
  }
};

// Pass 1, full covariances (D <= kMD): grid (row blocks, B).
template <typename T>
struct LseFullBlock {
  static constexpr int kThreads = kRows1;
  using Params = LseParams<T>;
  // [kKF][kMT] triangles, [kKF][kMD] W mu, [kKF] logc, [2][kRows1] reduction
  static constexpr int kMS = kKF * kMT, kCS = kMS + kKF * kMD, kRed = kCS + kKF, kTotal = kRed + 2 * kRows1;
  static size_t smem_bytes(const Params&) { return sizeof(T) * kTotal; }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char* smem, const Params& p) {
    T* sm = reinterpret_cast<T*>(smem);
    T* ws = sm;
    T* ms = sm + kMS;
    T* cs = sm + kCS;
    T* red = sm + kRed;
    const int N = p.N, K = p.K, D = p.D;
    const int b = (int)blk.block().y, t = blk.tid(), n = (int)blk.block().x * kRows1 + t;
    const T* xn = p.x + b * p.x_bstride + (int64_t)imin(n, N - 1) * D;
    T xr[kMD];
GMMK_UNROLL
    for (int d = 0; d < kMD; ++d) xr[d] = (n < N && d < D) ? xn[d] : T(0);
    const T* Wb = p.W + (int64_t)b * K * D * D;
    OnlineLSE2<T> st;
    st.init();
    for (int k0 = 0; k0 < K; k0 += kKF) {
      blk.sync();
      for (int e = t; e < kKF * kMT; e += kRows1) {
        const int j = e / kMT, q = e % kMT, k = k0 + j;
        int64_t i, c;
        untri(q, &i, &c);
        ws[e] = (k < K && i < D) ? Wb[(int64_t)k * D * D + i * D + c] : T(0);
      }
      for (int e = t; e < kKF * kMD; e += kRows1) {
        const int j = e / kMD, i = e % kMD, k = k0 + j;
        ms[e] = (k < K && i < D) ? p.wmu[((int64_t)b * K + k) * D + i] : T(0);
      }
      if (t < kKF) cs[t] = k0 + t < K ? p.logc[(int64_t)b * K + k0 + t] : T(0);
      blk.sync();
      const int jmax = imin(kKF, K - k0);
      for (int j = 0; j < jmax; ++j) {
        T sq = T(0);
GMMK_UNROLL
        for (int i = 0; i < kMD; ++i) {
          T y = -ms[j * kMD + i];
GMMK_UNROLL
          for (int c = 0; c <= i; ++c) y += ws[j * kMT + i * (i + 1) / 2 + c] * xr[c];
          sq += y * y;  // rows and columns past D are zero
        }
        st.push(cs[j] - sq * T(0.5), ExpFn());
      }
    }
    finish_row(st, n < N, p.logz + (int64_t)b * N + n, red, red + kRows1, t);
    block_sum2(blk, red, red + kRows1, kRows1, p.part1 + ((int64_t)b * blk.grid().x + blk.block().x) * 2, true);
  }
};

constexpr int kRS = kTK2 + 4;  // row stride of the responsibilities tile (16-byte aligned rows)

// Shared-memory layout of EMStatsBlock, in elements of T.
struct StatsSmem {
  int xs_stride, xs, rs, lz, cs, ws, ms, pm, ps, pt, red, total;
  GMMK_HD StatsSmem(int D, bool full) {
    xs_stride = (D + 1) | 1;  // odd: the 32 rows of a warp fall in 32 banks; column D holds 1 (see the features)
    xs = 0;
    rs = round4(xs + kTM2 * xs_stride);  // every region starts at a multiple of 4 elements (16-byte vector loads)
    lz = rs + kTM2 * kRS;
    cs = lz + kTM2;
    ws = cs + kTK2;
    const int wrows = full ? D * (D + 1) / 2 : kDT;
    ms = ws + wrows * kTK2;
    pm = ms + (full ? D : kDT) * kTK2;  // one pass: per (group of components, row) maxima, sums, entropy sums
    ps = pm + kKQ * kTM2;
    pt = ps + kKQ * kTM2;
    red = pt + kKQ * kTM2;  // one pass: the block's sums of log p and r log r, [2][kTM2]
    total = red + 2 * kTM2;
  }
};

// Statistics: grid (component tiles x feature tiles, splits of the rows, B). ONE (K <= kTK2): log p computed in the
// block, and its sums (and log p itself when write_logz) written; otherwise log p read from logz.
template <typename T, bool FULL, bool ONE>
struct EMStatsBlock {
  static constexpr int kThreads = kThreads2;
  struct Params {
    const T* x;
    int64_t x_bstride;
    const T* W;
    const T* wmu;
    const T* logc;
    T* logz;  // read (two passes), or written when write_logz (one pass, for the responsibilities)
    int N, K, D, P, chunk, S, ptiles;
    T* part_s;
    T* part_nk;
    T* part1;  // one pass: [B][S][2] sums of log p and r log r (not used by the second of two passes)
    bool write_logz;
  };
  static size_t smem_bytes(const Params& p) { return sizeof(T) * StatsSmem(p.D, FULL).total; }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char* smem, const Params& p) {
    T* sm = reinterpret_cast<T*>(smem);
    const int N = p.N, K = p.K, D = p.D, P = p.P;
    const StatsSmem L(D, FULL);
    T* xs = sm + L.xs;
    T* rs = sm + L.rs;
    T* lz = sm + L.lz;
    T* cs = sm + L.cs;
    T* ws = sm + L.ws;
    T* ms = sm + L.ms;
    const int XS = L.xs_stride;
    const Idx3 bi = blk.block();
    const int ktile = (int)bi.x / p.ptiles, ptile = (int)bi.x % p.ptiles, s = (int)bi.y, b = (int)bi.z;
    const int k0 = ktile * kTK2, pb = ptile * kPT, t = blk.tid();
    const int lrow = t % kTM2, lkq = t / kTM2;  // logits: one row, components lkq * 4 + j
    const int kq = t % 8, pq = t / 8;           // statistics: components kq * 4 + j, features pb + pq * 8 + i
    const T* xb = p.x + b * p.x_bstride;
    const T* Wb = p.W + (int64_t)b * K * D * (FULL ? D : 1);
    const T* mb = p.wmu + (int64_t)b * K * D;
    // features F_p = xs[fa] * xs[fb]: x_d = (d, D) (column D is 1), x_d^2 = (d, d), x_i x_j = (i, j)
    int fa[8], fb[8];
GMMK_UNROLL
    for (int i = 0; i < 8; ++i) {
      const int q = pb + pq * 8 + i;
      if (q >= P) {
        fa[i] = fb[i] = D;
      } else if (q < D) {
        fa[i] = q;
        fb[i] = D;
      } else if (!FULL) {
        fa[i] = fb[i] = q - D;
      } else {
        int64_t r, c;
        untri(q - D, &r, &c);
        fa[i] = (int)r;
        fb[i] = (int)c;
      }
    }
    if (t < kTK2) cs[t] = k0 + t < K ? p.logc[(int64_t)b * K + k0 + t] : -static_cast<T>(INFINITY);
    if (FULL) {  // the whole tile's triangles, [q][k], and W mu, [i][k]
      const int nt = D * (D + 1) / 2;
      for (int e = t; e < nt * kTK2; e += kThreads) {
        const int q = e / kTK2, j = e % kTK2, k = k0 + j;
        int64_t i, c;
        untri(q, &i, &c);
        ws[e] = k < K ? Wb[(int64_t)k * D * D + i * D + c] : T(0);
      }
      for (int e = t; e < D * kTK2; e += kThreads) {
        const int i = e / kTK2, j = e % kTK2, k = k0 + j;
        ms[e] = k < K ? mb[(int64_t)k * D + i] : T(0);
      }
    }
    T acc[4][8], nka[4];
GMMK_UNROLL
    for (int j = 0; j < 4; ++j) {
      nka[j] = T(0);
GMMK_UNROLL
      for (int i = 0; i < 8; ++i) acc[j][i] = T(0);
    }
    T lp_acc = T(0), rl_acc = T(0);  // one pass: sums over the rows of this thread (lkq == 0)
    const int nb = s * p.chunk, ne = imin(N, nb + p.chunk);
    for (int n0 = nb; n0 < ne; n0 += kTM2) {
      const int nr = imin(kTM2, ne - n0);
      blk.sync();
      for (int e = t; e < kTM2 * (D + 1); e += kThreads) {
        const int r = e / (D + 1), d = e % (D + 1);
        xs[r * XS + d] = d == D ? T(1) : (r < nr ? xb[(int64_t)(n0 + r) * D + d] : T(0));
      }
      if (!ONE && t < kTM2) lz[t] = t < nr ? p.logz[(int64_t)b * N + n0 + t] : T(0);
      T sq[4] = {T(0), T(0), T(0), T(0)};
      if (!FULL) {
        for (int d0 = 0; d0 < D; d0 += kDT) {
          blk.sync();
          for (int e = t; e < kDT * kTK2; e += kThreads) {
            const int j = e / kDT, dd = e % kDT, k = k0 + j, d = d0 + dd;
            const bool ok = k < K && d < D;
            ws[dd * kTK2 + j] = ok ? Wb[(int64_t)k * D + d] : T(0);
            ms[dd * kTK2 + j] = ok ? mb[(int64_t)k * D + d] : T(0);
          }
          blk.sync();
          const int dmax = imin(kDT, D - d0);
          for (int dd = 0; dd < dmax; ++dd) {
            const T xv = xs[lrow * XS + d0 + dd];
            T w[4], m[4];
            load4(ws + dd * kTK2 + lkq * 4, w);
            load4(ms + dd * kTK2 + lkq * 4, m);
GMMK_UNROLL
            for (int j = 0; j < 4; ++j) {
              const T y = y_term(w[j], xv, m[j]);
              sq[j] += y * y;
            }
          }
        }
      } else {
        blk.sync();
        for (int i = 0; i < D; ++i) {
          T y[4];
GMMK_UNROLL
          for (int j = 0; j < 4; ++j) y[j] = -ms[i * kTK2 + lkq * 4 + j];
          const T* wq = ws + (i * (i + 1) / 2) * kTK2 + lkq * 4;
          for (int c = 0; c <= i; ++c) {
            const T xv = xs[lrow * XS + c];
GMMK_UNROLL
            for (int j = 0; j < 4; ++j) y[j] += wq[c * kTK2 + j] * xv;
          }
GMMK_UNROLL
          for (int j = 0; j < 4; ++j) sq[j] += y[j] * y[j];
        }
      }
      T l[4], logp;
GMMK_UNROLL
      for (int j = 0; j < 4; ++j) l[j] = cs[lkq * 4 + j] - sq[j] * T(0.5);
      if (ONE) {  // the row's log-sum-exp over the kKQ groups of 4 components (fixed order)
        T* pm = sm + L.pm;
        T* ps = sm + L.ps;
        T* pt = sm + L.pt;
        const T ninf = -static_cast<T>(INFINITY);
        T m = ninf;
GMMK_UNROLL
        for (int j = 0; j < 4; ++j) m = l[j] > m ? l[j] : m;  // NaN logits are never the maximum
        pm[lkq * kTM2 + lrow] = m;
        blk.sync();
        T M = ninf;
        for (int q = 0; q < kKQ; ++q) {
          const T v = pm[q * kTM2 + lrow];
          M = v > M ? v : M;
        }
        T s4 = T(0), t4 = T(0);
GMMK_UNROLL
        for (int j = 0; j < 4; ++j) {  // every logit -inf: e = 0 (then log p = -inf and r = NaN, as in pass 1)
          const T lm = l[j] - M;
          const T e = (M == ninf && l[j] == l[j]) ? T(0) : ExpFn()(lm);
          s4 += e;
          t4 += r_log_r(e, lm);
        }
        ps[lkq * kTM2 + lrow] = s4;
        pt[lkq * kTM2 + lrow] = t4;
        blk.sync();
        T S = T(0), Tt = T(0);
        for (int q = 0; q < kKQ; ++q) {
          S += ps[q * kTM2 + lrow];
          Tt += pt[q * kTM2 + lrow];
        }
        const T ls = dlog(S);
        logp = M + ls;
        if (lkq == 0 && lrow < nr) {
          lp_acc += logp;
          rl_acc += Tt / S - ls;
          if (p.write_logz && ptile == 0) p.logz[(int64_t)b * N + n0 + lrow] = logp;
        }
      } else {
        logp = lz[lrow];
      }
GMMK_UNROLL
      for (int j = 0; j < 4; ++j) {
        const int kk = lkq * 4 + j;
        rs[lrow * kRS + kk] = lrow < nr ? ExpFn()(l[j] - logp) : T(0);
      }
      blk.sync();
      for (int r = 0; r < nr; ++r) {
        T rv[4], f[8];
        load4(rs + r * kRS + kq * 4, rv);
GMMK_UNROLL
        for (int i = 0; i < 8; ++i) {
          const T v = xs[r * XS + fa[i]];
          f[i] = fb[i] == fa[i] ? v * v : v * xs[r * XS + fb[i]];
        }
GMMK_UNROLL
        for (int j = 0; j < 4; ++j) {
          nka[j] += rv[j];
GMMK_UNROLL
          for (int i = 0; i < 8; ++i) acc[j][i] += rv[j] * f[i];
        }
      }
    }
    T* pst = p.part_s + ((int64_t)b * p.S + s) * K * P;
GMMK_UNROLL
    for (int j = 0; j < 4; ++j) {
      const int k = k0 + kq * 4 + j;
      if (k >= K) continue;
GMMK_UNROLL
      for (int i = 0; i < 8; ++i) {
        const int q = pb + pq * 8 + i;
        if (q < P) pst[(int64_t)k * P + q] = acc[j][i];
      }
      if (ptile == 0 && pq == 0) p.part_nk[((int64_t)b * p.S + s) * K + k] = nka[j];
    }
    if (ONE) {  // the block's sums of log p and r log r (threads 0 .. kTM2 hold the rows' sums)
      T* red = sm + L.red;
      if (t < kTM2) {
        red[t] = lp_acc;
        red[kTM2 + t] = rl_acc;
      }
      block_sum2(blk, red, red + kTM2, kTM2, p.part1 + ((int64_t)b * p.S + s) * 2, ptile == 0);
    }
  }
};

// Partial sums added in split (block) order, unpacked into the outputs: grid-stride over B K P + B K + 2 B values.
template <typename T>
struct ReduceBlock {
  static constexpr int kThreads = 256;
  struct Params {
    const T* part_s;
    const T* part_nk;
    const T* part1;
    T* lp;
    T* rl;
    T* nk;
    T* sx;
    T* sxx;
    int B, K, D, P, S, nblk1;
    bool full;
  };
  static size_t smem_bytes(const Params&) { return 0; }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char*, const Params& p) {
    const int K = p.K, D = p.D, P = p.P, S = p.S;
    const int64_t nS = (int64_t)p.B * K * P, total = nS + (int64_t)p.B * K + 2 * (int64_t)p.B;
    for (int64_t idx = (int64_t)blk.block().x * kThreads + blk.tid(); idx < total;
         idx += (int64_t)blk.grid().x * kThreads) {
      if (idx < nS) {
        const int64_t bk = idx / P;
        const int q = (int)(idx % P), b = (int)(bk / K);
        const int k = (int)(bk % K);
        T v = T(0);
        for (int s = 0; s < S; ++s) v += p.part_s[(((int64_t)b * S + s) * K + k) * P + q];
        if (q < D) {
          p.sx[bk * D + q] = v;
        } else if (!p.full) {
          p.sxx[bk * D + q - D] = v;
        } else {
          int64_t i, j;
          untri(q - D, &i, &j);
          p.sxx[bk * D * D + i * D + j] = v;
          p.sxx[bk * D * D + j * D + i] = v;
        }
      } else if (idx < nS + (int64_t)p.B * K) {
        const int64_t bk = idx - nS;
        const int b = (int)(bk / K), k = (int)(bk % K);
        T v = T(0);
        for (int s = 0; s < S; ++s) v += p.part_nk[((int64_t)b * S + s) * K + k];
        p.nk[bk] = v;
      } else {
        const int64_t e = idx - nS - (int64_t)p.B * K;
        const int b = (int)(e / 2), w = (int)(e % 2);
        T v = T(0);
        for (int i = 0; i < p.nblk1; ++i) v += p.part1[((int64_t)b * p.nblk1 + i) * 2 + w];
        (w == 0 ? p.lp : p.rl)[b] = v;
      }
    }
  }
};

// resp[b, n, k] = exp(l_nk - log p_n), one thread per (n, k): grid (blocks, B), only when the responsibilities are
// asked for.
template <typename T, bool FULL>
struct RespBlock {
  static constexpr int kThreads = 256;
  struct Params {
    const T* x;
    int64_t x_bstride;
    const T* W;
    const T* wmu;
    const T* logc;
    const T* logz;
    int N, K, D;
    T* resp;
  };
  static size_t smem_bytes(const Params&) { return 0; }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char*, const Params& p) {
    const int K = p.K, D = p.D, b = (int)blk.block().y;
    for (int64_t e = (int64_t)blk.block().x * kThreads + blk.tid(); e < (int64_t)p.N * K;
         e += (int64_t)blk.grid().x * kThreads) {
      const int64_t n = e / K;
      const int k = (int)(e % K);
      const T* xn = p.x + b * p.x_bstride + n * D;
      const T* m = p.wmu + ((int64_t)b * K + k) * D;
      T sq = T(0);
      if (!FULL) {
        const T* w = p.W + ((int64_t)b * K + k) * D;
        for (int d = 0; d < D; ++d) {
          const T y = y_term(w[d], xn[d], m[d]);
          sq += y * y;
        }
      } else {
        const T* w = p.W + ((int64_t)b * K + k) * D * D;
        for (int i = 0; i < D; ++i) {
          T y = -m[i];
          for (int c = 0; c <= i; ++c) y += w[i * D + c] * xn[c];
          sq += y * y;
        }
      }
      p.resp[((int64_t)b * p.N + n) * K + k] =
          ExpFn()(p.logc[(int64_t)b * K + k] - sq * T(0.5) - p.logz[(int64_t)b * p.N + n]);
    }
  }
};

// How a call is split: features P, pass-1 blocks, tiles of components and features, splits S of chunk rows.
struct Plan {
  int64_t P, nblk1, ktiles, ptiles, S, chunk;
  bool one;  // K <= kTK2: one pass over the data
  Plan(int64_t B, int64_t N, int64_t K, int64_t D, bool full) {
    P = D + second_moments(D, full);
    nblk1 = std::max<int64_t>(1, ceil_div(N, kRows1));
    ktiles = ceil_div(K, kTK2);
    ptiles = std::max<int64_t>(1, ceil_div(P, kPT));
    one = ktiles == 1;
    const int64_t base = std::max<int64_t>(1, B * ktiles * ptiles);
    S = std::max<int64_t>(1, std::min(ceil_div(kTargetBlocks2, base), ceil_div(N, 256)));
    chunk = ceil_div(ceil_div(std::max<int64_t>(N, 1), S), kTM2) * kTM2;
    S = std::max<int64_t>(1, ceil_div(N, chunk));
  }
  // elements of T of the workspace: log p [B][N], pass-1 (or one-pass) sums [B][max(nblk1, S)][2], the partial
  // statistics [B][S][K][P] and counts [B][S][K]
  int64_t workspace(int64_t B, int64_t N, int64_t K) const {
    return B * N + B * std::max(nblk1, S) * 2 + B * S * K * P + B * S * K;
  }
};

// The whole call on a launcher L (CudaLaunch or HostLaunch): see launch_mixture_em_stats in
// gmmkernels/mixture_em_stats_launch.h for the arguments. Returns the first launch error (L::kOk when fine).
template <class L, typename T>
typename L::Error run_em_stats(const L& launch, const T* x, int64_t x_bstride, const T* W, const T* wmu, const T* logc,
                               T* lp, T* rl, T* nk, T* sx, T* sxx, T* resp, int64_t B, int64_t N, int64_t K, int64_t D,
                               bool full, T* workspace) {
  using Error = typename L::Error;
  if (B == 0) return L::kOk;
  const Plan pl(B, N, K, D, full);
  T* logz = workspace;
  T* part1 = logz + B * N;
  T* part_s = part1 + B * std::max(pl.nblk1, pl.S) * 2;
  T* part_nk = part_s + B * pl.S * K * pl.P;
  const Idx3 g_stats{(unsigned)(pl.ktiles * pl.ptiles), (unsigned)pl.S, (unsigned)B};
  const int iN = (int)N, iK = (int)K, iD = (int)D;
  // the statistics program: one pass (log p in the block, its sums into part1) or the second of two
  auto stats = [&](auto prog) {
    using P = decltype(prog);
    return launch.template run<P>(g_stats, typename P::Params{x, x_bstride, W, wmu, logc, logz, iN, iK, iD, (int)pl.P,
                                                              (int)pl.chunk, (int)pl.S, (int)pl.ptiles, part_s, part_nk,
                                                              part1, pl.one && resp != nullptr});
  };
  Error err = L::kOk;
  if (N == 0) {  // no rows: every sum is 0
    err = launch.zero(workspace, sizeof(T) * pl.workspace(B, N, K));
  } else if (pl.one) {
    err = full ? stats(EMStatsBlock<T, true, true>{}) : stats(EMStatsBlock<T, false, true>{});
  } else {
    const Idx3 g1{(unsigned)pl.nblk1, (unsigned)B, 1};
    const LseParams<T> lse{x, x_bstride, W, wmu, logc, iN, iK, iD, logz, part1};
    err = full ? launch.template run<LseFullBlock<T>>(g1, lse) : launch.template run<LseDiagBlock<T>>(g1, lse);
    if (err == L::kOk) err = full ? stats(EMStatsBlock<T, true, false>{}) : stats(EMStatsBlock<T, false, false>{});
  }
  if (err != L::kOk) return err;
  // the blocks whose sums of log p and r log r the reduction adds (with no rows, S = nblk1 = 1: the zeroed sums)
  const int nblk = (int)(pl.one ? pl.S : pl.nblk1);
  const int64_t total = B * K * pl.P + B * K + 2 * B;
  const Idx3 g_red{(unsigned)std::min<int64_t>(ceil_div(total, ReduceBlock<T>::kThreads), 65535), 1, 1};
  err = launch.template run<ReduceBlock<T>>(
      g_red, typename ReduceBlock<T>::Params{part_s, part_nk, part1, lp, rl, nk, sx, sxx, (int)B, iK, iD, (int)pl.P,
                                             (int)pl.S, nblk, full});
  if (err != L::kOk || resp == nullptr || N == 0) return err;
  const Idx3 g_resp{(unsigned)std::min<int64_t>(ceil_div(N * K, 256), 65535), (unsigned)B, 1};
  if (full)
    return launch.template run<RespBlock<T, true>>(
        g_resp, typename RespBlock<T, true>::Params{x, x_bstride, W, wmu, logc, logz, iN, iK, iD, resp});
  return launch.template run<RespBlock<T, false>>(
      g_resp, typename RespBlock<T, false>::Params{x, x_bstride, W, wmu, logc, logz, iN, iK, iD, resp});
}

}  // namespace mixture_em_stats
}  // namespace gmmkernels
