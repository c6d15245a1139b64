// CUDA kernels of mixture_em_stats (no torch headers; launched from mixture_em_stats.cpp, launchers declared in
// gmmkernels/mixture_em_stats_launch.h, maths in gmmkernels/mixture_em_stats.h).
//
// Pass 1 (lse_*_kernel): one thread per row, 128 rows per block, all K components in tiles of 32 (diag: the 32
//   logits of a tile in registers, x and the parameters staged in shared memory 32 dimensions at a time; full:
//   the row in registers, 16 components' triangles staged at a time). Online log-sum-exp with the entropy term:
//   log p_n to the workspace, and the block's sums of log p and r log r (fixed-order tree).
// Pass 2 (stats_kernel): block = (32 components, 256 features, one split of the rows), 256 threads. Per tile of 32
//   rows: logits of (row, 4 components) per thread, r = exp(l - log p) to shared memory, then each thread adds
//   r[row][4 components] x F[row][8 features] to 32 register accumulators. Only the split's partial sums leave the
//   block: the N x K responsibilities never reach global memory.
// Pass 3 (reduce_kernel): partial sums added in split order, unpacked into nk, sx, sxx; pass-1 sums into lp, rl.
// mixture_em_mstep (mstep_kernel): one block per mixture, one thread per component.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "gmmkernels/mixture_em_stats.h"
#include "gmmkernels/mixture_em_stats_launch.h"

namespace gmmkernels {
namespace {

using namespace gmmkernels::mixture_em_stats;

constexpr int kRows1 = 128;  // pass 1: rows (threads) per block
constexpr int kTK1 = 32;     // pass 1 (diag): components per register tile
constexpr int kDT = 32;      // dimensions per staged chunk (diag)
constexpr int kKF = 16;      // pass 1 (full): components staged at a time
constexpr int kTK2 = 32;     // pass 2: components per block
constexpr int kPT = 256;     // pass 2: features per block
constexpr int kTM2 = 32;     // pass 2: rows per tile
constexpr int kThreads2 = 256;
constexpr int kMD = static_cast<int>(kEMStatsMaxFullD);
constexpr int kMT = kMD * (kMD + 1) / 2;
constexpr int64_t kTargetBlocks2 = 1024;  // pass-2 blocks to aim for (an H100 has 132 SMs)

template <typename T>
struct Exp {
  __device__ T operator()(T v) const { return exp(v); }
};
template <>
struct Exp<float> {
  __device__ float operator()(float v) const { return expf(v); }
};

// Four consecutive values from 16-byte aligned shared memory, in one (float) or two (double) vector loads.
__device__ __forceinline__ void load4(const float* p, float* o) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  o[0] = v.x;
  o[1] = v.y;
  o[2] = v.z;
  o[3] = v.w;
}
__device__ __forceinline__ void load4(const double* p, double* o) {
  const double2 a = *reinterpret_cast<const double2*>(p), c = *reinterpret_cast<const double2*>(p + 2);
  o[0] = a.x;
  o[1] = a.y;
  o[2] = c.x;
  o[3] = c.y;
}

__device__ __forceinline__ float dlog(float v) { return logf(v); }
__device__ __forceinline__ double dlog(double v) { return log(v); }

// log p and r log r of a finished row, into the block's reduction buffer (0 for rows past N).
template <typename T>
__device__ void finish_row(const OnlineLSE2<T>& st, bool valid, T* logz_n, T* red_lp, T* red_rl) {
  T lp = T(0), rl = T(0);
  if (valid) {
    const T ls = dlog(st.s);
    lp = st.m + ls;
    rl = st.t / st.s - ls;
    *logz_n = lp;
  }
  red_lp[threadIdx.x] = lp;
  red_rl[threadIdx.x] = rl;
}

// Fixed-order tree sum of red[0 .. kRows1) (both buffers) into part[0], part[1].
template <typename T>
__device__ void block_sum2(T* red_lp, T* red_rl, T* part) {
  for (int h = kRows1 / 2; h > 0; h /= 2) {
    __syncthreads();
    if (threadIdx.x < h) {
      red_lp[threadIdx.x] += red_lp[threadIdx.x + h];
      red_rl[threadIdx.x] += red_rl[threadIdx.x + h];
    }
  }
  if (threadIdx.x == 0) {
    part[0] = red_lp[0];
    part[1] = red_rl[0];
  }
}

template <typename T>
__global__ void __launch_bounds__(kRows1) lse_diag_kernel(const T* __restrict__ x, int64_t x_bstride,
                                                          const T* __restrict__ W, const T* __restrict__ wmu,
                                                          const T* __restrict__ logc, int N, int K, int D,
                                                          T* __restrict__ logz, T* __restrict__ part1) {
  // dimensions staged at a time: 16 in double, so that the static shared memory stays under 48 KiB
  constexpr int DT = sizeof(T) == 8 ? kDT / 2 : kDT;
  __shared__ T xs[DT][kRows1 + 1];
  __shared__ __align__(16) T ws[DT][kTK1];
  __shared__ __align__(16) T ms[DT][kTK1];
  __shared__ T red[2][kRows1];
  const int b = blockIdx.y, t = threadIdx.x, n0 = blockIdx.x * kRows1, n = n0 + t;
  const T* xb = x + b * x_bstride;
  const T* Wb = W + (int64_t)b * K * D;
  const T* mb = wmu + (int64_t)b * K * D;
  const T* cb = logc + (int64_t)b * K;
  OnlineLSE2<T> st;
  st.init();
  for (int k0 = 0; k0 < K; k0 += kTK1) {
    T acc[kTK1];
#pragma unroll
    for (int j = 0; j < kTK1; ++j) acc[j] = T(0);
    for (int d0 = 0; d0 < D; d0 += DT) {
      __syncthreads();
      for (int i = t; i < kRows1 * DT; i += kRows1) {
        const int r = i / DT, dd = i % DT, nn = n0 + r, d = d0 + dd;
        xs[dd][r] = (nn < N && d < D) ? xb[(int64_t)nn * D + d] : T(0);
      }
      for (int i = t; i < DT * kTK1; i += kRows1) {
        const int j = i / DT, dd = i % DT, k = k0 + j, d = d0 + dd;
        const bool ok = k < K && d < D;
        ws[dd][j] = ok ? Wb[(int64_t)k * D + d] : T(0);
        ms[dd][j] = ok ? mb[(int64_t)k * D + d] : T(0);
      }
      __syncthreads();
      const int dmax = min(DT, D - d0);
      for (int dd = 0; dd < dmax; ++dd) {
        const T xv = xs[dd][t];
#pragma unroll
        for (int j = 0; j < kTK1; j += 4) {
          T w[4], m[4];
          load4(&ws[dd][j], w);
          load4(&ms[dd][j], m);
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const T y = y_term(w[q], xv, m[q]);
            acc[j + q] += y * y;
          }
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kTK1; ++j)
      if (k0 + j < K) st.push(cb[k0 + j] - acc[j] * T(0.5), Exp<T>());
  }
  finish_row(st, n < N, logz + (int64_t)b * N + n, red[0], red[1]);
  block_sum2(red[0], red[1], part1 + ((int64_t)b * gridDim.x + blockIdx.x) * 2);
}

template <typename T>
__global__ void __launch_bounds__(kRows1) lse_full_kernel(const T* __restrict__ x, int64_t x_bstride,
                                                          const T* __restrict__ W, const T* __restrict__ wmu,
                                                          const T* __restrict__ logc, int N, int K, int D,
                                                          T* __restrict__ logz, T* __restrict__ part1) {
  __shared__ T ws[kKF][kMT];
  __shared__ T ms[kKF][kMD];
  __shared__ T cs[kKF];
  __shared__ T red[2][kRows1];
  const int b = blockIdx.y, t = threadIdx.x, n = blockIdx.x * kRows1 + t;
  const T* xn = x + b * x_bstride + (int64_t)min(n, N - 1) * D;
  T xr[kMD];
#pragma unroll
  for (int d = 0; d < kMD; ++d) xr[d] = (n < N && d < D) ? xn[d] : T(0);
  const T* Wb = W + (int64_t)b * K * D * D;
  OnlineLSE2<T> st;
  st.init();
  for (int k0 = 0; k0 < K; k0 += kKF) {
    __syncthreads();
    for (int e = t; e < kKF * kMT; e += kRows1) {
      const int j = e / kMT, q = e % kMT, k = k0 + j;
      int64_t i, c;
      untri(q, &i, &c);
      ws[j][q] = (k < K && i < D) ? Wb[(int64_t)k * D * D + i * D + c] : T(0);
    }
    for (int e = t; e < kKF * kMD; e += kRows1) {
      const int j = e / kMD, i = e % kMD, k = k0 + j;
      ms[j][i] = (k < K && i < D) ? wmu[((int64_t)b * K + k) * D + i] : T(0);
    }
    if (t < kKF) cs[t] = k0 + t < K ? logc[(int64_t)b * K + k0 + t] : T(0);
    __syncthreads();
    const int jmax = min(kKF, K - k0);
    for (int j = 0; j < jmax; ++j) {
      T sq = T(0);
#pragma unroll
      for (int i = 0; i < kMD; ++i) {
        T y = -ms[j][i];
#pragma unroll
        for (int c = 0; c <= i; ++c) y += ws[j][i * (i + 1) / 2 + c] * xr[c];
        sq += y * y;  // rows and columns past D are zero
      }
      st.push(cs[j] - sq * T(0.5), Exp<T>());
    }
  }
  finish_row(st, n < N, logz + (int64_t)b * N + n, red[0], red[1]);
  block_sum2(red[0], red[1], part1 + ((int64_t)b * gridDim.x + blockIdx.x) * 2);
}

constexpr int kRS = kTK2 + 4;  // row stride of the responsibilities tile (16-byte aligned rows)

// Shared-memory layout of stats_kernel, in elements of T.
struct Smem2 {
  int xs_stride, xs, rs, lz, cs, ws, ms, total;
  __host__ __device__ Smem2(int D, bool full) {
    xs_stride = (D + 1) | 1;  // odd: the 32 rows of a warp fall in 32 banks; column D holds 1 (see the features)
    xs = 0;
    rs = xs + kTM2 * xs_stride;  // every region starts at a multiple of 4 elements (16-byte vector loads)
    lz = rs + kTM2 * kRS;
    cs = lz + kTM2;
    ws = cs + kTK2;
    const int wrows = full ? D * (D + 1) / 2 : kDT;
    ms = ws + wrows * kTK2;
    total = ms + (full ? D : kDT) * kTK2;
  }
};

template <typename T, bool FULL>
__global__ void __launch_bounds__(kThreads2) stats_kernel(const T* __restrict__ x, int64_t x_bstride,
                                                          const T* __restrict__ W, const T* __restrict__ wmu,
                                                          const T* __restrict__ logc, const T* __restrict__ logz,
                                                          int N, int K, int D, int P, int chunk, int S, int ptiles,
                                                          T* __restrict__ part_s, T* __restrict__ part_nk) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sm = reinterpret_cast<T*>(smem_raw);
  const Smem2 L(D, FULL);
  T* xs = sm + L.xs;
  T* rs = sm + L.rs;
  T* lz = sm + L.lz;
  T* cs = sm + L.cs;
  T* ws = sm + L.ws;
  T* ms = sm + L.ms;
  const int XS = L.xs_stride;
  const int ktile = blockIdx.x / ptiles, ptile = blockIdx.x % ptiles, s = blockIdx.y, b = blockIdx.z;
  const int k0 = ktile * kTK2, pb = ptile * kPT, t = threadIdx.x;
  const int lrow = t % kTM2, lkq = t / kTM2;  // logits: one row, components lkq * 4 + j
  const int kq = t % 8, pq = t / 8;           // statistics: components kq * 4 + j, features pb + pq * 8 + i
  const T* xb = x + b * x_bstride;
  const T* Wb = W + (int64_t)b * K * D * (FULL ? D : 1);
  const T* mb = wmu + (int64_t)b * K * D;
  // features F_p = xs[fa] * xs[fb]: x_d = (d, D) (column D is 1), x_d^2 = (d, d), x_i x_j = (i, j)
  int fa[8], fb[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int p = pb + pq * 8 + i;
    if (p >= P) {
      fa[i] = fb[i] = D;
    } else if (p < D) {
      fa[i] = p;
      fb[i] = D;
    } else if (!FULL) {
      fa[i] = fb[i] = p - D;
    } else {
      int64_t r, c;
      untri(p - D, &r, &c);
      fa[i] = (int)r;
      fb[i] = (int)c;
    }
  }
  if (t < kTK2) cs[t] = k0 + t < K ? logc[(int64_t)b * K + k0 + t] : -static_cast<T>(INFINITY);
  if (FULL) {  // the whole tile's triangles, [q][k], and W mu, [i][k]
    const int nt = D * (D + 1) / 2;
    for (int e = t; e < nt * kTK2; e += kThreads2) {
      const int q = e / kTK2, j = e % kTK2, k = k0 + j;
      int64_t i, c;
      untri(q, &i, &c);
      ws[e] = k < K ? Wb[(int64_t)k * D * D + i * D + c] : T(0);
    }
    for (int e = t; e < D * kTK2; e += kThreads2) {
      const int i = e / kTK2, j = e % kTK2, k = k0 + j;
      ms[e] = k < K ? mb[(int64_t)k * D + i] : T(0);
    }
  }
  T acc[4][8], nka[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    nka[j] = T(0);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[j][i] = T(0);
  }
  const int nb = s * chunk, ne = min(N, nb + chunk);
  for (int n0 = nb; n0 < ne; n0 += kTM2) {
    const int nr = min(kTM2, ne - n0);
    __syncthreads();
    for (int e = t; e < kTM2 * (D + 1); e += kThreads2) {
      const int r = e / (D + 1), d = e % (D + 1);
      xs[r * XS + d] = d == D ? T(1) : (r < nr ? xb[(int64_t)(n0 + r) * D + d] : T(0));
    }
    if (t < kTM2) lz[t] = t < nr ? logz[(int64_t)b * N + n0 + t] : T(0);
    T sq[4] = {T(0), T(0), T(0), T(0)};
    if (!FULL) {
      for (int d0 = 0; d0 < D; d0 += kDT) {
        __syncthreads();
        for (int e = t; e < kDT * kTK2; e += kThreads2) {
          const int j = e / kDT, dd = e % kDT, k = k0 + j, d = d0 + dd;
          const bool ok = k < K && d < D;
          ws[dd * kTK2 + j] = ok ? Wb[(int64_t)k * D + d] : T(0);
          ms[dd * kTK2 + j] = ok ? mb[(int64_t)k * D + d] : T(0);
        }
        __syncthreads();
        const int dmax = min(kDT, D - d0);
        for (int dd = 0; dd < dmax; ++dd) {
          const T xv = xs[lrow * XS + d0 + dd];
          T w[4], m[4];
          load4(ws + dd * kTK2 + lkq * 4, w);
          load4(ms + dd * kTK2 + lkq * 4, m);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const T y = y_term(w[j], xv, m[j]);
            sq[j] += y * y;
          }
        }
      }
    } else {
      __syncthreads();
      for (int i = 0; i < D; ++i) {
        T y[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) y[j] = -ms[i * kTK2 + lkq * 4 + j];
        const T* wq = ws + (i * (i + 1) / 2) * kTK2 + lkq * 4;
        for (int c = 0; c <= i; ++c) {
          const T xv = xs[lrow * XS + c];
#pragma unroll
          for (int j = 0; j < 4; ++j) y[j] += wq[c * kTK2 + j] * xv;
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) sq[j] += y[j] * y[j];
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int kk = lkq * 4 + j;
      rs[lrow * kRS + kk] = lrow < nr ? Exp<T>()(cs[kk] - sq[j] * T(0.5) - lz[lrow]) : T(0);
    }
    __syncthreads();
    for (int r = 0; r < nr; ++r) {
      T rv[4], f[8];
      load4(rs + r * kRS + kq * 4, rv);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const T v = xs[r * XS + fa[i]];
        f[i] = fb[i] == fa[i] ? v * v : v * xs[r * XS + fb[i]];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        nka[j] += rv[j];
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[j][i] += rv[j] * f[i];
      }
    }
  }
  T* ps = part_s + ((int64_t)b * S + s) * K * P;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int k = k0 + kq * 4 + j;
    if (k >= K) continue;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int p = pb + pq * 8 + i;
      if (p < P) ps[(int64_t)k * P + p] = acc[j][i];
    }
    if (ptile == 0 && pq == 0) part_nk[((int64_t)b * S + s) * K + k] = nka[j];
  }
}

// Partial sums added in split (block) order, unpacked into the outputs.
template <typename T>
__global__ void reduce_kernel(const T* __restrict__ part_s, const T* __restrict__ part_nk, const T* __restrict__ part1,
                              T* __restrict__ lp, T* __restrict__ rl, T* __restrict__ nk, T* __restrict__ sx,
                              T* __restrict__ sxx, int B, int K, int D, int P, int S, int nblk1, bool full) {
  const int64_t nS = (int64_t)B * K * P, total = nS + (int64_t)B * K + 2 * (int64_t)B;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    if (idx < nS) {
      const int64_t bk = idx / P;
      const int p = (int)(idx % P), b = (int)(bk / K);
      const int k = (int)(bk % K);
      T v = T(0);
      for (int s = 0; s < S; ++s) v += part_s[(((int64_t)b * S + s) * K + k) * P + p];
      if (p < D) {
        sx[bk * D + p] = v;
      } else if (!full) {
        sxx[bk * D + p - D] = v;
      } else {
        int64_t i, j;
        untri(p - D, &i, &j);
        sxx[bk * D * D + i * D + j] = v;
        sxx[bk * D * D + j * D + i] = v;
      }
    } else if (idx < nS + (int64_t)B * K) {
      const int64_t bk = idx - nS;
      const int b = (int)(bk / K), k = (int)(bk % K);
      T v = T(0);
      for (int s = 0; s < S; ++s) v += part_nk[((int64_t)b * S + s) * K + k];
      nk[bk] = v;
    } else {
      const int64_t e = idx - nS - (int64_t)B * K;
      const int b = (int)(e / 2), w = (int)(e % 2);
      T v = T(0);
      for (int i = 0; i < nblk1; ++i) v += part1[((int64_t)b * nblk1 + i) * 2 + w];
      (w == 0 ? lp : rl)[b] = v;
    }
  }
}

// resp[b, n, k] = exp(l_nk - log p_n), one thread per (n, k): only when the responsibilities are asked for.
template <typename T, bool FULL>
__global__ void resp_kernel(const T* __restrict__ x, int64_t x_bstride, const T* __restrict__ W,
                            const T* __restrict__ wmu, const T* __restrict__ logc, const T* __restrict__ logz, int N,
                            int K, int D, T* __restrict__ resp) {
  const int b = blockIdx.y;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < (int64_t)N * K;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = e / K;
    const int k = (int)(e % K);
    const T* xn = x + b * x_bstride + n * D;
    const T* m = wmu + ((int64_t)b * K + k) * D;
    T sq = T(0);
    if (!FULL) {
      const T* w = W + ((int64_t)b * K + k) * D;
      for (int d = 0; d < D; ++d) {
        const T y = y_term(w[d], xn[d], m[d]);
        sq += y * y;
      }
    } else {
      const T* w = W + ((int64_t)b * K + k) * D * D;
      for (int i = 0; i < D; ++i) {
        T y = -m[i];
        for (int c = 0; c <= i; ++c) y += w[i * D + c] * xn[c];
        sq += y * y;
      }
    }
    resp[((int64_t)b * N + n) * K + k] = Exp<T>()(logc[(int64_t)b * K + k] - sq * T(0.5) - logz[(int64_t)b * N + n]);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Plan {
  int64_t P, nblk1, ktiles, ptiles, S, chunk;
  Plan(int64_t B, int64_t N, int64_t K, int64_t D, bool full) {
    P = D + second_moments(D, full);
    nblk1 = std::max<int64_t>(1, ceil_div(N, kRows1));
    ktiles = ceil_div(K, kTK2);
    ptiles = std::max<int64_t>(1, ceil_div(P, kPT));
    const int64_t base = std::max<int64_t>(1, B * ktiles * ptiles);
    S = std::max<int64_t>(1, std::min(ceil_div(kTargetBlocks2, base), ceil_div(N, 256)));
    chunk = ceil_div(ceil_div(std::max<int64_t>(N, 1), S), kTM2) * kTM2;
    S = std::max<int64_t>(1, ceil_div(N, chunk));
  }
};

template <typename T, bool FULL>
cudaError_t launch_stats(const T* x, int64_t x_bstride, const T* W, const T* wmu, const T* logc, const T* logz,
                         int64_t B, int64_t N, int64_t K, int64_t D, const Plan& pl, T* part_s, T* part_nk,
                         cudaStream_t stream) {
  const size_t smem = sizeof(T) * Smem2((int)D, FULL).total;
  cudaError_t err = cudaFuncSetAttribute(stats_kernel<T, FULL>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  dim3 grid((unsigned)(pl.ktiles * pl.ptiles), (unsigned)pl.S, (unsigned)B);
  stats_kernel<T, FULL><<<grid, kThreads2, smem, stream>>>(x, x_bstride, W, wmu, logc, logz, (int)N, (int)K, (int)D,
                                                           (int)pl.P, (int)pl.chunk, (int)pl.S, (int)pl.ptiles, part_s,
                                                           part_nk);
  return cudaGetLastError();
}

// M-step (mixture_em_mstep): one block per mixture. Its first thread sums the weights' normaliser (in index order,
// as the CPU kernel does), then the block's threads take one component each: the header's mstep_component, with
// the D x D work matrices of a full covariance in the outputs scale and W themselves (global memory; the dispatcher
// keeps D small enough for that).
template <typename T>
__global__ void mstep_kernel(const T* __restrict__ nk, const T* __restrict__ sx, const T* __restrict__ sxx,
                             T* __restrict__ logits, T* __restrict__ mu, T* __restrict__ scale, T* __restrict__ W,
                             T* __restrict__ logc, bool* __restrict__ ok, int64_t K, int64_t D, int kind, T reg, T eps,
                             bool low) {
  __shared__ T total;
  const int64_t b = blockIdx.x;
  if (threadIdx.x == 0) total = mstep_total(nk + b * K, K, eps);
  __syncthreads();
  const bool full = kind == kFull;
  const int64_t s2 = full ? D * D : D, sc = full ? D * D : kind == kSpherical ? 1 : D;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const int64_t q = b * K + k;
    ok[q] = mstep_component<T>(nk[q], sx + q * D, sxx + q * s2, D, kind, low, reg, eps, total, logits + q,
                               mu + q * D, scale + q * sc, W + q * s2, logc + q);
  }
}

}  // namespace
}  // namespace gmmkernels

// The launchers of mixture_em_stats_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
int64_t gmmkernels::mixture_em_stats_workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full) {
  const Plan pl(B, N, K, D, full);
  return B * N + B * pl.nblk1 * 2 + B * pl.S * K * pl.P + B * pl.S * K;
}

template <typename T>
cudaError_t gmmkernels::launch_mixture_em_stats(const T* x, int64_t x_bstride, const T* W, const T* wmu, const T* logc,
                                                T* lp, T* rl, T* nk, T* sx, T* sxx, T* resp, int64_t B, int64_t N,
                                                int64_t K, int64_t D, bool full, T* workspace, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  const Plan pl(B, N, K, D, full);
  T* logz = workspace;
  T* part1 = logz + B * N;
  T* part_s = part1 + B * pl.nblk1 * 2;
  T* part_nk = part_s + B * pl.S * K * pl.P;
  cudaError_t err = cudaSuccess;
  if (N > 0) {
    dim3 g1((unsigned)pl.nblk1, (unsigned)B);
    if (full)
      lse_full_kernel<T><<<g1, kRows1, 0, stream>>>(x, x_bstride, W, wmu, logc, (int)N, (int)K, (int)D, logz, part1);
    else
      lse_diag_kernel<T><<<g1, kRows1, 0, stream>>>(x, x_bstride, W, wmu, logc, (int)N, (int)K, (int)D, logz, part1);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    err = full ? launch_stats<T, true>(x, x_bstride, W, wmu, logc, logz, B, N, K, D, pl, part_s, part_nk, stream)
               : launch_stats<T, false>(x, x_bstride, W, wmu, logc, logz, B, N, K, D, pl, part_s, part_nk, stream);
    if (err != cudaSuccess) return err;
  } else {  // no rows: every sum is 0
    err = cudaMemsetAsync(workspace, 0, sizeof(T) * mixture_em_stats_workspace(B, N, K, D, full), stream);
    if (err != cudaSuccess) return err;
  }
  const int64_t total = B * K * pl.P + B * K + 2 * B;
  const unsigned blocks = (unsigned)std::min<int64_t>(ceil_div(total, 256), 65535);
  reduce_kernel<T><<<blocks, 256, 0, stream>>>(part_s, part_nk, part1, lp, rl, nk, sx, sxx, (int)B, (int)K, (int)D,
                                               (int)pl.P, (int)(N > 0 ? pl.S : 1), (int)pl.nblk1, full);
  err = cudaGetLastError();
  if (err != cudaSuccess || resp == nullptr || N == 0) return err;
  dim3 g3((unsigned)std::min<int64_t>(ceil_div(N * K, 256), 65535), (unsigned)B);
  if (full)
    resp_kernel<T, true><<<g3, 256, 0, stream>>>(x, x_bstride, W, wmu, logc, logz, (int)N, (int)K, (int)D, resp);
  else
    resp_kernel<T, false><<<g3, 256, 0, stream>>>(x, x_bstride, W, wmu, logc, logz, (int)N, (int)K, (int)D, resp);
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_mixture_em_stats)

template <typename T>
cudaError_t gmmkernels::launch_mixture_em_mstep(const T* nk, const T* sx, const T* sxx, T* logits, T* means, T* scale,
                                                T* W, T* logc, bool* ok, int64_t B, int64_t K, int64_t D, int cov_kind,
                                                T reg_covar, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  const bool dbl = sizeof(T) == sizeof(double);
  const T eps = T(10) * std::numeric_limits<T>::epsilon();
  const int threads = static_cast<int>(std::min<int64_t>(128, ceil_div(K, 32) * 32));
  mstep_kernel<T><<<(unsigned)B, threads, 0, stream>>>(nk, sx, sxx, logits, means, scale, W, logc, ok, K, D, cov_kind,
                                                       reg_covar, eps, !dbl);
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_mixture_em_mstep)
