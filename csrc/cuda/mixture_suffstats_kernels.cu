// CUDA kernels of mixture_suffstats (no torch headers; launched from mixture_suffstats.cpp, launchers declared in
// gmmkernels/mixture_suffstats_launch.h).
// Deterministic (no atomics): N is cut into S chunks whose count depends on the shapes only (not on the GPU); each
// output of a chunk is accumulated by one thread in a fixed order, then the S partial sums are added in chunk order.
// Without the split a small problem (B = 1, K = 16, D = 8: one block) would run serially over N on one SM.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "gmmkernels/mixture_suffstats_launch.h"

namespace gmmkernels {
namespace {

constexpr int TK = 32, TD = 32, TN = 32;

// Block (b, k-tile, d-tile), 256 threads; thread owns 4 (k, d) outputs: k = ty + 8 j, d = tx.
template <typename T>
__global__ void suffstats_diag_kernel(const T* __restrict__ x, const T* __restrict__ r, T* __restrict__ nk, T* __restrict__ sx,
                                      T* __restrict__ sxx, int N, int K, int D, int64_t x_bstride, int S, int chunk, int B) {
  __shared__ T rs[TN][TK + 1];
  __shared__ T xs[TN][TD + 1];
  const int b = blockIdx.z / S, s = blockIdx.z % S, k0 = blockIdx.y * TK, d0 = blockIdx.x * TD;
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int nb = s * chunk, ne = min(N, nb + chunk);  // this block's rows
  const T* xb = x + b * x_bstride;
  const T* rb = r + (int64_t)b * N * K;
  // chunk s writes the s-th partial sums (S == 1: the outputs themselves)
  nk += (int64_t)s * B * K;
  sx += (int64_t)s * B * K * D;
  if (sxx) sxx += (int64_t)s * B * K * D;
  T a1[4] = {0, 0, 0, 0}, a2[4] = {0, 0, 0, 0}, a0 = 0;
  for (int n0 = nb; n0 < ne; n0 += TN) {
    for (int i = threadIdx.x; i < TN * TK; i += blockDim.x) {
      const int nn = i / TK, kk = i % TK;
      const int n = n0 + nn, k = k0 + kk;
      rs[nn][kk] = (n < ne && k < K) ? rb[(int64_t)n * K + k] : T(0);
      const int dd = i % TD, d = d0 + dd;
      xs[nn][dd] = (n < ne && d < D) ? xb[(int64_t)n * D + d] : T(0);
    }
    __syncthreads();
    const int nmax = min(TN, ne - n0);
    for (int nn = 0; nn < nmax; ++nn) {
      const T xv = xs[nn][tx];
      const T xv2 = xv * xv;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const T w = rs[nn][ty + 8 * j];
        a1[j] += w * xv;
        a2[j] += w * xv2;
      }
      if (blockIdx.x == 0 && ty == 0) a0 += rs[nn][tx];
    }
    __syncthreads();
  }
  const int d = d0 + tx;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int k = k0 + ty + 8 * j;
    if (k < K && d < D) {
      const int64_t o = ((int64_t)b * K + k) * D + d;
      sx[o] = a1[j];
      if (sxx) sxx[o] = a2[j];
    }
  }
  if (blockIdx.x == 0 && ty == 0 && k0 + tx < K) nk[(int64_t)b * K + k0 + tx] = a0;
}

// Full second moments: block (b*K + k, i-tile, j-tile) with 16 x 16 threads, one (i, j) output each.
template <typename T>
__global__ void suffstats_full_kernel(const T* __restrict__ x, const T* __restrict__ r, T* __restrict__ sxx, int N, int K, int D,
                                      int64_t x_bstride, int S, int chunk, int B) {
  constexpr int TI = 16, CN = 64;
  __shared__ T xi[CN][TI + 1];
  __shared__ T xj[CN][TI + 1];
  __shared__ T rw[CN];
  const int bk = blockIdx.x / S, s = blockIdx.x % S, b = bk / K, k = bk % K;
  const int i0 = blockIdx.y * TI, j0 = blockIdx.z * TI;
  if (j0 > i0) return;  // upper tiles are mirrored
  const int ti = threadIdx.x / TI, tj = threadIdx.x % TI;
  const int nb = s * chunk, ne = min(N, nb + chunk);
  const T* xb = x + b * x_bstride;
  const T* rb = r + (int64_t)b * N * K + k;
  sxx += (int64_t)s * B * K * D * D;
  T acc = 0;
  for (int n0 = nb; n0 < ne; n0 += CN) {
    for (int e = threadIdx.x; e < CN * TI; e += blockDim.x) {
      const int nn = e / TI, c = e % TI, n = n0 + nn;
      xi[nn][c] = (n < ne && i0 + c < D) ? xb[(int64_t)n * D + i0 + c] : T(0);
      xj[nn][c] = (n < ne && j0 + c < D) ? xb[(int64_t)n * D + j0 + c] : T(0);
    }
    for (int nn = threadIdx.x; nn < CN; nn += blockDim.x) rw[nn] = (n0 + nn < ne) ? rb[(int64_t)(n0 + nn) * K] : T(0);
    __syncthreads();
    const int nmax = min(CN, ne - n0);
    for (int nn = 0; nn < nmax; ++nn) acc += rw[nn] * xi[nn][ti] * xj[nn][tj];
    __syncthreads();
  }
  const int i = i0 + ti, j = j0 + tj;
  // One writer per (i, j) pair: on a diagonal tile threads (ti, tj) and (tj, ti) hold sums that differ in the last bit
  // ((r xi) xj vs (r xj) xi), so only the lower-triangle thread writes both mirrored entries (j <= i implies j < D).
  if (i < D && j <= i) {
    T* o = sxx + (int64_t)bk * D * D;
    o[(int64_t)i * D + j] = acc;
    o[(int64_t)j * D + i] = acc;
  }
}

// out[i] = sum over s = 0..S-1 of part[s * M + i], in that order.
template <typename T>
__global__ void sum_partials_kernel(const T* __restrict__ part, T* __restrict__ out, int64_t M, int S) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < M; i += (int64_t)gridDim.x * blockDim.x) {
    T acc = part[i];
    for (int s = 1; s < S; ++s) acc += part[(int64_t)s * M + i];
    out[i] = acc;
  }
}

template <typename T>
void sum_partials(const T* part, T* out, int64_t M, int S, cudaStream_t stream) {
  if (M == 0) return;
  const int64_t blocks = std::min<int64_t>((M + 255) / 256, 65535);
  sum_partials_kernel<T><<<(unsigned)blocks, 256, 0, stream>>>(part, out, M, S);
}

constexpr int64_t kTargetBlocks = 1024;  // enough to fill an H100 (132 SMs) several times over
constexpr int64_t kMinChunk = 512;       // rows per chunk at least: partial sums stay cheap to add

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace
}  // namespace gmmkernels

// The launchers of mixture_suffstats_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
int64_t gmmkernels::mixture_suffstats_splits(int64_t B, int64_t N, int64_t K, int64_t D, bool full, int64_t* chunk) {
  const int64_t base = full ? B * K * ceil_div(D, 16) * (ceil_div(D, 16) + 1) / 2 : ceil_div(D, TD) * ceil_div(K, TK) * B;
  int64_t S = base >= kTargetBlocks ? 1 : ceil_div(kTargetBlocks, std::max<int64_t>(base, 1));
  S = std::max<int64_t>(1, std::min(S, N / kMinChunk));
  int64_t c = ceil_div(std::max<int64_t>(N, 1), S);
  c = ceil_div(c, 64) * 64;
  S = std::max<int64_t>(1, ceil_div(N, c));
  *chunk = c;
  return S;
}

// Workspace for S > 1: the S partial sums of every output.
int64_t gmmkernels::mixture_suffstats_workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full) {
  int64_t chunk = 0;
  const int64_t Sd = mixture_suffstats_splits(B, N, K, D, false, &chunk);
  const int64_t Sf = full ? mixture_suffstats_splits(B, N, K, D, true, &chunk) : 1;
  const int64_t diag = Sd > 1 ? Sd * B * K * (1 + 2 * D) : 0;
  const int64_t fullw = Sf > 1 ? Sf * B * K * D * D : 0;
  return diag + fullw;
}

template <typename T>
cudaError_t gmmkernels::launch_mixture_suffstats(const T* x, const T* r, T* nk, T* sx, T* sxx, int64_t B, int64_t N,
                                                 int64_t K, int64_t D, int64_t x_bstride, bool full, T* diag_tmp,
                                                 T* workspace, cudaStream_t stream) {
  if (B == 0 || K == 0) return cudaSuccess;
  int64_t chunk = 0;
  const int64_t S = mixture_suffstats_splits(B, N, K, D, false, &chunk);
  T* sxx_diag = full ? diag_tmp : sxx;
  // D = 0 still needs one block column: it computes N_k
  dim3 g1((unsigned)std::max<int64_t>(1, ceil_div(D, TD)), (unsigned)ceil_div(K, TK), (unsigned)(B * S));
  if (S == 1) {
    suffstats_diag_kernel<T><<<g1, 256, 0, stream>>>(x, r, nk, sx, sxx_diag, (int)N, (int)K, (int)D, x_bstride, 1, (int)chunk,
                                                     (int)B);
  } else {
    T* p_nk = workspace;
    T* p_sx = p_nk + S * B * K;
    T* p_sxx = p_sx + S * B * K * D;
    suffstats_diag_kernel<T><<<g1, 256, 0, stream>>>(x, r, p_nk, p_sx, p_sxx, (int)N, (int)K, (int)D, x_bstride, (int)S,
                                                     (int)chunk, (int)B);
    sum_partials<T>(p_nk, nk, B * K, (int)S, stream);
    sum_partials<T>(p_sx, sx, B * K * D, (int)S, stream);
    sum_partials<T>(p_sxx, sxx_diag, B * K * D, (int)S, stream);
    workspace = p_sxx + S * B * K * D;
  }
  if (full && D > 0) {
    const int64_t Sf = mixture_suffstats_splits(B, N, K, D, true, &chunk);
    const unsigned t = (unsigned)ceil_div(D, 16);
    dim3 g2((unsigned)(B * K * Sf), t, t);
    T* dst = Sf == 1 ? sxx : workspace;
    suffstats_full_kernel<T><<<g2, 256, 0, stream>>>(x, r, dst, (int)N, (int)K, (int)D, x_bstride, (int)Sf, (int)chunk, (int)B);
    if (Sf > 1) sum_partials<T>(workspace, sxx, B * K * D * D, (int)Sf, stream);
  }
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_mixture_suffstats)
