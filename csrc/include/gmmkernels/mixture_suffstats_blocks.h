// The CUDA kernels of mixture_suffstats as block programs (gmmkernels/block_program.h): launched on a GPU by
// csrc/cuda/mixture_suffstats_kernels.cu and run on CPU threads by csrc/simt/mixture_suffstats.cpp, which the tests
// compare with the float64 reference.
// Deterministic (no atomics): N is cut into S chunks whose count depends on the shapes only (not on the GPU); each
// output of a chunk is accumulated by one thread in a fixed order, then the S partial sums are added in chunk order.
// Without the split a small problem (B = 1, K = 16, D = 8: one block) would run serially over N on one SM.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "gmmkernels/block_program.h"

namespace gmmkernels {
namespace mixture_suffstats {

constexpr int TK = 32, TD = 32, TN = 32;  // diag: components, dimensions and rows per tile
constexpr int TI = 16, CN = 64;           // full: tile of (i, j) entries, rows per step
constexpr int64_t kTargetBlocks = 1024;   // enough to fill an H100 (132 SMs) several times over
constexpr int64_t kMinChunk = 512;        // rows per chunk at least: partial sums stay cheap to add

// The split of N (full: the split of the x x^T program); a function of the shapes only. Returns S >= 1 and sets
// *chunk (rows per chunk, a multiple of 64).
inline int64_t splits(int64_t B, int64_t N, int64_t K, int64_t D, bool full, int64_t* chunk) {
  const int64_t base = full ? B * K * ceil_div(D, TI) * (ceil_div(D, TI) + 1) / 2 : ceil_div(D, TD) * ceil_div(K, TK) * B;
  int64_t S = base >= kTargetBlocks ? 1 : ceil_div(kTargetBlocks, std::max<int64_t>(base, 1));
  S = std::max<int64_t>(1, std::min(S, N / kMinChunk));
  int64_t c = ceil_div(std::max<int64_t>(N, 1), S);
  c = ceil_div(c, 64) * 64;
  S = std::max<int64_t>(1, ceil_div(N, c));
  *chunk = c;
  return S;
}

// Elements of the workspace for S > 1: the S partial sums of every output.
inline int64_t workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full) {
  int64_t chunk = 0;
  const int64_t Sd = splits(B, N, K, D, false, &chunk);
  const int64_t Sf = full ? splits(B, N, K, D, true, &chunk) : 1;
  const int64_t diag = Sd > 1 ? Sd * B * K * (1 + 2 * D) : 0;
  const int64_t fullw = Sf > 1 ? Sf * B * K * D * D : 0;
  return diag + fullw;
}

template <typename T>
struct SuffParams {
  const T* x;
  const T* r;
  T* nk;
  T* sx;
  T* sxx;  // diag: sum r x^2 (may be null: not computed); full: sum r x x^T
  int N, K, D;
  int64_t x_bstride;
  int S, chunk, B;
};

// Diagonal statistics: grid (d-tiles, k-tiles, B * S), 256 threads; thread owns 4 (k, d) outputs: k = ty + 8 j,
// d = tx. Chunk s writes the s-th partial sums (S == 1: the outputs themselves).
template <typename T>
struct SuffDiagBlock {
  static constexpr int kThreads = 256;
  using Params = SuffParams<T>;
  static constexpr int kXS = TN * (TK + 1), kTotal = kXS + TN * (TD + 1);  // rs [TN][TK + 1], xs [TN][TD + 1]
  static size_t smem_bytes(const Params&) { return sizeof(T) * kTotal; }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char* smem, const Params& p) {
    T* rs = reinterpret_cast<T*>(smem);
    T* xs = rs + kXS;
    const int N = p.N, K = p.K, D = p.D, S = p.S;
    const Idx3 bi = blk.block();
    const int b = (int)bi.z / S, s = (int)bi.z % S, k0 = (int)bi.y * TK, d0 = (int)bi.x * TD;
    const int t = blk.tid(), tx = t % 32, ty = t / 32;
    const int nb = s * p.chunk, ne = imin(N, nb + p.chunk);  // this block's rows
    const T* xb = p.x + b * p.x_bstride;
    const T* rb = p.r + (int64_t)b * N * K;
    T* nk = p.nk + (int64_t)s * p.B * K;
    T* sx = p.sx + (int64_t)s * p.B * K * D;
    T* sxx = p.sxx ? p.sxx + (int64_t)s * p.B * K * D : nullptr;
    T a1[4] = {0, 0, 0, 0}, a2[4] = {0, 0, 0, 0}, a0 = 0;
    for (int n0 = nb; n0 < ne; n0 += TN) {
      for (int i = t; i < TN * TK; i += kThreads) {
        const int nn = i / TK, kk = i % TK;
        const int n = n0 + nn, k = k0 + kk;
        rs[nn * (TK + 1) + kk] = (n < ne && k < K) ? rb[(int64_t)n * K + k] : T(0);
        const int dd = i % TD, d = d0 + dd;
        xs[nn * (TD + 1) + dd] = (n < ne && d < D) ? xb[(int64_t)n * D + d] : T(0);
      }
      blk.sync();
      const int nmax = imin(TN, ne - n0);
      for (int nn = 0; nn < nmax; ++nn) {
        const T xv = xs[nn * (TD + 1) + tx];
        const T xv2 = xv * xv;
        GMMK_UNROLL
        for (int j = 0; j < 4; ++j) {
          const T w = rs[nn * (TK + 1) + ty + 8 * j];
          a1[j] += w * xv;
          a2[j] += w * xv2;
        }
        if (bi.x == 0 && ty == 0) a0 += rs[nn * (TK + 1) + tx];
      }
      blk.sync();
    }
    const int d = d0 + tx;
    GMMK_UNROLL
    for (int j = 0; j < 4; ++j) {
      const int k = k0 + ty + 8 * j;
      if (k < K && d < D) {
        const int64_t o = ((int64_t)b * K + k) * D + d;
        sx[o] = a1[j];
        if (sxx) sxx[o] = a2[j];
      }
    }
    if (bi.x == 0 && ty == 0 && k0 + tx < K) nk[(int64_t)b * K + k0 + tx] = a0;
  }
};

// Full second moments: grid (B * K * S, i-tiles, j-tiles) with 16 x 16 threads, one (i, j) output each; the tiles
// above the diagonal leave at once (mirrored from the lower ones).
template <typename T>
struct SuffFullBlock {
  static constexpr int kThreads = TI * TI;
  using Params = SuffParams<T>;
  static constexpr int kXJ = CN * (TI + 1), kRW = 2 * CN * (TI + 1), kTotal = kRW + CN;  // xi, xj [CN][TI + 1], rw [CN]
  static size_t smem_bytes(const Params&) { return sizeof(T) * kTotal; }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char* smem, const Params& p) {
    T* xi = reinterpret_cast<T*>(smem);
    T* xj = xi + kXJ;
    T* rw = xi + kRW;
    const int N = p.N, K = p.K, D = p.D, S = p.S;
    const Idx3 bi = blk.block();
    const int bk = (int)bi.x / S, s = (int)bi.x % S, b = bk / K, k = bk % K;
    const int i0 = (int)bi.y * TI, j0 = (int)bi.z * TI;
    if (j0 > i0) return;  // the whole block: upper tiles are mirrored
    const int t = blk.tid(), ti = t / TI, tj = t % TI;
    const int nb = s * p.chunk, ne = imin(N, nb + p.chunk);
    const T* xb = p.x + b * p.x_bstride;
    const T* rb = p.r + (int64_t)b * N * K + k;
    T* sxx = p.sxx + (int64_t)s * p.B * K * D * D;
    T acc = 0;
    for (int n0 = nb; n0 < ne; n0 += CN) {
      for (int e = t; e < CN * TI; e += kThreads) {
        const int nn = e / TI, c = e % TI, n = n0 + nn;
        xi[nn * (TI + 1) + c] = (n < ne && i0 + c < D) ? xb[(int64_t)n * D + i0 + c] : T(0);
        xj[nn * (TI + 1) + c] = (n < ne && j0 + c < D) ? xb[(int64_t)n * D + j0 + c] : T(0);
      }
      for (int nn = t; nn < CN; nn += kThreads) rw[nn] = (n0 + nn < ne) ? rb[(int64_t)(n0 + nn) * K] : T(0);
      blk.sync();
      const int nmax = imin(CN, ne - n0);
      for (int nn = 0; nn < nmax; ++nn) acc += rw[nn] * xi[nn * (TI + 1) + ti] * xj[nn * (TI + 1) + tj];
      blk.sync();
    }
    const int i = i0 + ti, j = j0 + tj;
    // One writer per (i, j) pair: on a diagonal tile threads (ti, tj) and (tj, ti) hold sums that differ in the last
    // bit ((r xi) xj vs (r xj) xi), so only the lower-triangle thread writes both mirrored entries (j <= i implies
    // j < D).
    if (i < D && j <= i) {
      T* o = sxx + (int64_t)bk * D * D;
      o[(int64_t)i * D + j] = acc;
      o[(int64_t)j * D + i] = acc;
    }
  }
};

// out[i] = sum over s = 0..S-1 of part[s * M + i], in that order: grid-stride.
template <typename T>
struct SumPartialsBlock {
  static constexpr int kThreads = 256;
  struct Params {
    const T* part;
    T* out;
    int64_t M;
    int S;
  };
  static size_t smem_bytes(const Params&) { return 0; }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char*, const Params& p) {
    for (int64_t i = (int64_t)blk.block().x * kThreads + blk.tid(); i < p.M; i += (int64_t)blk.grid().x * kThreads) {
      T acc = p.part[i];
      for (int s = 1; s < p.S; ++s) acc += p.part[(int64_t)s * p.M + i];
      p.out[i] = acc;
    }
  }
};

template <class L, typename T>
typename L::Error sum_partials(const L& launch, const T* part, T* out, int64_t M, int S) {
  if (M == 0) return L::kOk;
  const Idx3 g{(unsigned)std::min<int64_t>(ceil_div(M, 256), 65535), 1, 1};
  return launch.template run<SumPartialsBlock<T>>(g, typename SumPartialsBlock<T>::Params{part, out, M, S});
}

// The whole call on a launcher L (CudaLaunch or HostLaunch): see launch_mixture_suffstats in
// gmmkernels/mixture_suffstats_launch.h for the arguments. Returns the first launch error (L::kOk when fine).
template <class L, typename T>
typename L::Error run_suffstats(const L& launch, const T* x, const T* r, T* nk, T* sx, T* sxx, int64_t B, int64_t N,
                                int64_t K, int64_t D, int64_t x_bstride, bool full, T* diag_tmp, T* ws) {
  using Error = typename L::Error;
  if (B == 0 || K == 0) return L::kOk;
  int64_t chunk = 0;
  const int64_t S = splits(B, N, K, D, false, &chunk);
  T* sxx_diag = full ? diag_tmp : sxx;
  // D = 0 still needs one block column: it computes N_k
  const Idx3 g1{(unsigned)std::max<int64_t>(1, ceil_div(D, TD)), (unsigned)ceil_div(K, TK), (unsigned)(B * S)};
  Error err = L::kOk;
  if (S == 1) {
    err = launch.template run<SuffDiagBlock<T>>(
        g1, SuffParams<T>{x, r, nk, sx, sxx_diag, (int)N, (int)K, (int)D, x_bstride, 1, (int)chunk, (int)B});
    if (err != L::kOk) return err;
  } else {
    T* p_nk = ws;
    T* p_sx = p_nk + S * B * K;
    T* p_sxx = p_sx + S * B * K * D;
    err = launch.template run<SuffDiagBlock<T>>(
        g1, SuffParams<T>{x, r, p_nk, p_sx, p_sxx, (int)N, (int)K, (int)D, x_bstride, (int)S, (int)chunk, (int)B});
    if (err == L::kOk) err = sum_partials(launch, p_nk, nk, B * K, (int)S);
    if (err == L::kOk) err = sum_partials(launch, p_sx, sx, B * K * D, (int)S);
    if (err == L::kOk) err = sum_partials(launch, p_sxx, sxx_diag, B * K * D, (int)S);
    if (err != L::kOk) return err;
    ws = p_sxx + S * B * K * D;
  }
  if (full && D > 0) {
    const int64_t Sf = splits(B, N, K, D, true, &chunk);
    const unsigned t = (unsigned)ceil_div(D, TI);
    T* dst = Sf == 1 ? sxx : ws;
    err = launch.template run<SuffFullBlock<T>>(
        Idx3{(unsigned)(B * K * Sf), t, t},
        SuffParams<T>{x, r, nullptr, nullptr, dst, (int)N, (int)K, (int)D, x_bstride, (int)Sf, (int)chunk, (int)B});
    if (err == L::kOk && Sf > 1) err = sum_partials(launch, ws, sxx, B * K * D * D, (int)Sf);
  }
  return err;
}

}  // namespace mixture_suffstats
}  // namespace gmmkernels
