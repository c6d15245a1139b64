// CUDA kernels of mixture_suffstats (no torch headers; launched from mixture_suffstats_cuda.cpp).
// Deterministic: every output is accumulated by one thread over n = 0..N-1 in a fixed order (no atomics).
#include <cuda_runtime.h>
#include <cstdint>

namespace gmmkernels {
namespace {

constexpr int TK = 32, TD = 32, TN = 32;

// Block (b, k-tile, d-tile), 256 threads; thread owns 4 (k, d) outputs: k = ty + 8 j, d = tx.
template <typename T>
__global__ void suffstats_diag_kernel(const T* __restrict__ x, const T* __restrict__ r, T* __restrict__ nk, T* __restrict__ sx,
                                      T* __restrict__ sxx, int N, int K, int D, int64_t x_bstride) {
  __shared__ T rs[TN][TK + 1];
  __shared__ T xs[TN][TD + 1];
  const int b = blockIdx.z, k0 = blockIdx.y * TK, d0 = blockIdx.x * TD;
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const T* xb = x + b * x_bstride;
  const T* rb = r + (int64_t)b * N * K;
  T a1[4] = {0, 0, 0, 0}, a2[4] = {0, 0, 0, 0}, a0 = 0;
  for (int n0 = 0; n0 < N; n0 += TN) {
    for (int i = threadIdx.x; i < TN * TK; i += blockDim.x) {
      const int nn = i / TK, kk = i % TK;
      const int n = n0 + nn, k = k0 + kk;
      rs[nn][kk] = (n < N && k < K) ? rb[(int64_t)n * K + k] : T(0);
      const int dd = i % TD, d = d0 + dd;
      xs[nn][dd] = (n < N && d < D) ? xb[(int64_t)n * D + d] : T(0);
    }
    __syncthreads();
    const int nmax = min(TN, N - n0);
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
                                      int64_t x_bstride) {
  constexpr int TI = 16, CN = 64;
  __shared__ T xi[CN][TI + 1];
  __shared__ T xj[CN][TI + 1];
  __shared__ T rw[CN];
  const int bk = blockIdx.x, b = bk / K, k = bk % K;
  const int i0 = blockIdx.y * TI, j0 = blockIdx.z * TI;
  if (j0 > i0) return;  // upper tiles are mirrored
  const int ti = threadIdx.x / TI, tj = threadIdx.x % TI;
  const T* xb = x + b * x_bstride;
  const T* rb = r + (int64_t)b * N * K + k;
  T acc = 0;
  for (int n0 = 0; n0 < N; n0 += CN) {
    for (int e = threadIdx.x; e < CN * TI; e += blockDim.x) {
      const int nn = e / TI, c = e % TI, n = n0 + nn;
      xi[nn][c] = (n < N && i0 + c < D) ? xb[(int64_t)n * D + i0 + c] : T(0);
      xj[nn][c] = (n < N && j0 + c < D) ? xb[(int64_t)n * D + j0 + c] : T(0);
    }
    for (int nn = threadIdx.x; nn < CN; nn += blockDim.x) rw[nn] = (n0 + nn < N) ? rb[(int64_t)(n0 + nn) * K] : T(0);
    __syncthreads();
    const int nmax = min(CN, N - n0);
    for (int nn = 0; nn < nmax; ++nn) acc += rw[nn] * xi[nn][ti] * xj[nn][tj];
    __syncthreads();
  }
  const int i = i0 + ti, j = j0 + tj;
  if (i < D && j < D) {
    T* o = sxx + (int64_t)bk * D * D;
    o[(int64_t)i * D + j] = acc;
    o[(int64_t)j * D + i] = acc;
  }
}

}  // namespace

template <typename T>
cudaError_t launch_mixture_suffstats(const T* x, const T* r, T* nk, T* sx, T* sxx, int64_t B, int64_t N, int64_t K, int64_t D,
                                     int64_t x_bstride, bool full, T* diag_tmp, cudaStream_t stream) {
  if (B == 0 || K == 0) return cudaSuccess;
  dim3 g1((unsigned)((D + TD - 1) / TD), (unsigned)((K + TK - 1) / TK), (unsigned)B);
  suffstats_diag_kernel<T><<<g1, 256, 0, stream>>>(x, r, nk, sx, full ? diag_tmp : sxx, (int)N, (int)K, (int)D, x_bstride);
  if (full) {
    const unsigned t = (unsigned)((D + 15) / 16);
    dim3 g2((unsigned)(B * K), t, t);
    suffstats_full_kernel<T><<<g2, 256, 0, stream>>>(x, r, sxx, (int)N, (int)K, (int)D, x_bstride);
  }
  return cudaGetLastError();
}

template cudaError_t launch_mixture_suffstats<float>(const float*, const float*, float*, float*, float*, int64_t, int64_t, int64_t,
                                                     int64_t, int64_t, bool, float*, cudaStream_t);
template cudaError_t launch_mixture_suffstats<double>(const double*, const double*, double*, double*, double*, int64_t, int64_t,
                                                      int64_t, int64_t, int64_t, bool, double*, cudaStream_t);

}  // namespace gmmkernels
