// CUDA kernel of gmmkernels::mixture_dispatch (no torch headers here; the ATen host code is in
// csrc/cuda/mixture_dispatch.cpp). Semantics: csrc/include/gmmkernels/mixture_dispatch_launch.h and
// gmmkernels/mixddpm_reference.py.
//
// One block of 256 threads owns kTN = 64 rows. Thread (g = tid / 16, lane = tid % 16) owns rows
// g, g + 16, g + 32, g + 48 of the block and, in each tile of kTK = 16 centers, center lane. The block
// streams tiles of x0 [64 x 32] and centers [16 x 32] through shared memory (GEMM form: every thread
// accumulates 4 dot products, reusing each center value 4 times), then scores dist = |c_k|^2 - 2 x.c_k
// and keeps a running (min, argmin) per (row, lane) with a strict '<'. After the last tile the 16 lanes
// of a row reduce (min, argmin) with shuffles, ordering ties by the lower index, so the result is the
// lowest minimising index, as in the CPU kernel and the reference. The same 16 lanes then write
// x_t = a x0 + (1 - a) c_j + sigma eps and |x0 - c_j|^2 (direct difference) over D.
#include <cuda_runtime.h>

#include <cstdint>

#include "gmmkernels/mixture_dispatch_launch.h"

namespace gmmkernels {
namespace {

constexpr int kThreads = 256;
constexpr int kLanes = 16;   // centers per tile = threads per row group
constexpr int kGroups = 16;  // kThreads / kLanes
constexpr int kRowsPerThread = 4;
constexpr int kTN = kGroups * kRowsPerThread;  // 64 rows per block
constexpr int kTK = kLanes;
constexpr int kTD = 32;

template <typename T>
__device__ __forceinline__ T inf_value();
template <>
__device__ __forceinline__ float inf_value<float>() {
  return __int_as_float(0x7f800000);
}
template <>
__device__ __forceinline__ double inf_value<double>() {
  return __longlong_as_double(0x7ff0000000000000LL);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) dispatch_kernel(const T* __restrict__ x0, const T* __restrict__ c,
                                                            const T* __restrict__ cn, const T* __restrict__ a,
                                                            const T* __restrict__ sigma, const T* __restrict__ eps,
                                                            T* __restrict__ xt, int64_t* __restrict__ assign,
                                                            T* __restrict__ dist2, int64_t N, int64_t K, int64_t D) {
  __shared__ T xs[kTN][kTD + 1];
  __shared__ T cs[kTK][kTD + 1];
  const int tid = threadIdx.x;
  const int g = tid / kLanes;
  const int lane = tid % kLanes;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTN;

  T best[kRowsPerThread];
  int64_t bidx[kRowsPerThread];
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    best[r] = inf_value<T>();
    bidx[r] = 0;
  }

  for (int64_t k0 = 0; k0 < K; k0 += kTK) {
    T acc[kRowsPerThread];
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) acc[r] = T(0);
    for (int64_t d0 = 0; d0 < D; d0 += kTD) {
      // x tile: kTN * kTD = 2048 values, 8 per thread, coalesced along d
#pragma unroll
      for (int i = 0; i < (kTN * kTD) / kThreads; ++i) {
        const int idx = tid + i * kThreads;
        const int rr = idx / kTD, dd = idx % kTD;
        const int64_t n = row0 + rr, d = d0 + dd;
        xs[rr][dd] = (n < N && d < D) ? x0[n * D + d] : T(0);
      }
#pragma unroll
      for (int i = 0; i < (kTK * kTD) / kThreads; ++i) {
        const int idx = tid + i * kThreads;
        const int kk = idx / kTD, dd = idx % kTD;
        const int64_t k = k0 + kk, d = d0 + dd;
        cs[kk][dd] = (k < K && d < D) ? c[k * D + d] : T(0);
      }
      __syncthreads();
#pragma unroll 8
      for (int dd = 0; dd < kTD; ++dd) {
        const T v = cs[lane][dd];
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) acc[r] += xs[g + r * kGroups][dd] * v;
      }
      __syncthreads();
    }
    const int64_t k = k0 + lane;
    if (k < K) {
      const T ck = cn[k];
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const T dist = ck - T(2) * acc[r];
        if (dist < best[r] && dist > -inf_value<T>()) {  // strict: lower k keeps ties; NaN, +-inf never win
          best[r] = dist;
          bidx[r] = k;
        }
      }
    }
  }

  // (min, lowest argmin) across the 16 lanes of each row; the 16 lanes are one half warp
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    T b = best[r];
    int64_t j = bidx[r];
#pragma unroll
    for (int off = kLanes / 2; off > 0; off /= 2) {
      const T ob = __shfl_xor_sync(0xffffffffu, b, off, kLanes);
      const int64_t oj = __shfl_xor_sync(0xffffffffu, j, off, kLanes);
      if (ob < b || (ob == b && oj < j)) {
        b = ob;
        j = oj;
      }
    }
    best[r] = b;
    bidx[r] = j;
  }

  // epilogue: gather c_j, centred forward noising, exact squared distance
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int64_t n = row0 + g + r * kGroups;
    const bool valid = n < N;
    const int64_t j = bidx[r];
    T s = T(0);
    if (valid) {
      const T an = a[n], bn = T(1) - a[n], sn = sigma[n];
      const T* xn = x0 + n * D;
      const T* cj = c + j * D;
      T* on = xt + n * D;
      if (eps != nullptr) {
        const T* en = eps + n * D;
        for (int64_t d = lane; d < D; d += kLanes) {
          const T xv = xn[d], cv = cj[d];
          const T diff = xv - cv;
          s += diff * diff;
          on[d] = an * xv + bn * cv + sn * en[d];
        }
      } else {
        for (int64_t d = lane; d < D; d += kLanes) {
          const T xv = xn[d], cv = cj[d];
          const T diff = xv - cv;
          s += diff * diff;
          on[d] = an * xv + bn * cv;
        }
      }
    }
#pragma unroll
    for (int off = kLanes / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off, kLanes);
    if (valid && lane == 0) {
      assign[n] = j;
      dist2[n] = s;
    }
  }
}

}  // namespace
}  // namespace gmmkernels

// The launchers of mixture_dispatch_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
template <typename T>
cudaError_t gmmkernels::launch_mixture_dispatch(const T* x0, const T* c, const T* cn, const T* a, const T* sigma,
                                                const T* eps, T* xt, int64_t* assign, T* dist2, int64_t N, int64_t K,
                                                int64_t D, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  const int64_t blocks = (N + kTN - 1) / kTN;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  dispatch_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x0, c, cn, a, sigma, eps, xt, assign,
                                                                            dist2, N, K, D);
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_mixture_dispatch)
