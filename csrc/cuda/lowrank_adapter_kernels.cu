// CUDA kernels of the SMD low-rank adapter (docs/kernels.md (lowrank_adapter); the method: docs/methods.md (SMD));
// launchers declared in gmmkernels/lowrank_adapter_launch.h. No torch headers here.
//
// One warp per pixel. Lane k owns the elements j = k, k + 32, ... of the pixel's d-vectors.
//  * d <= 256: the vectors live in registers (VPT = ceil(d / 32) values per lane, VPT in {1, 2, 4, 8}).
//  * d > 256: a generic variant keeps the running vector in the output buffer (each lane re-reads only the addresses
//    it wrote itself, so no synchronisation is needed).
// Per layer the forward does one warp-reduced dot and one axpy: alpha = u_l . r, r <- alpha u_l + c_l r.
// The backward replays the forward, parking r_0 .. r_{L-1} in grad_u (the same lane writes and later reads each
// address, then overwrites it with the gradient), and sweeps l = L..1 with three warp-reduced dots per layer
// (alpha_l = u_l . r_{l-1}, beta_l = g_l . u_l, g_l . r_{l-1}):
//   grad_u_l = alpha_l g_l + beta_l r_{l-1},   g_{l-1} = beta_l u_l + c_l g_l,   gc_part[p, l] = g_l . r_{l-1}.
// Memory traffic per pixel: forward reads (L + 1) d and writes d values; backward reads (2L + 2) d, writes (2L + 1) d.
#include <cuda_runtime.h>

#include <cstdint>

#include "gmmkernels/lowrank_adapter_launch.h"

namespace gmmkernels {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ int64_t pixel_index() {
  return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x / kWarp);
}

// ---------------------------------------------------------------------------------------------------------------
// register variants (d <= 32 * VPT)

template <typename T, int VPT>
__global__ void __launch_bounds__(kThreads) fwd_reg(const T* __restrict__ r, const T* __restrict__ u,
                                                    const T* __restrict__ c, T* __restrict__ out, int64_t P, int L,
                                                    int d) {
  const int64_t p = pixel_index();
  if (p >= P) return;  // warp-uniform
  const int lane = threadIdx.x % kWarp;
  const T* rp = r + p * d;
  const T* up = u + p * L * d;
  T x[VPT];
#pragma unroll
  for (int v = 0; v < VPT; ++v) {
    const int j = lane + kWarp * v;
    x[v] = j < d ? rp[j] : T(0);
  }
  for (int l = 0; l < L; ++l) {
    const T* ul = up + static_cast<int64_t>(l) * d;
    T uu[VPT];
    T a = 0;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      const int j = lane + kWarp * v;
      uu[v] = j < d ? ul[j] : T(0);
      a += uu[v] * x[v];
    }
    a = warp_sum(a);
    const T cl = c[l];
#pragma unroll
    for (int v = 0; v < VPT; ++v) x[v] = a * uu[v] + cl * x[v];
  }
  T* op = out + p * d;
#pragma unroll
  for (int v = 0; v < VPT; ++v) {
    const int j = lane + kWarp * v;
    if (j < d) op[j] = x[v];
  }
}

template <typename T, int VPT>
__global__ void __launch_bounds__(kThreads) bwd_reg(const T* __restrict__ g, const T* __restrict__ r,
                                                    const T* __restrict__ u, const T* __restrict__ c,
                                                    T* __restrict__ grad_r, T* __restrict__ grad_u,
                                                    T* __restrict__ gc_part, int64_t P, int L, int d) {
  const int64_t p = pixel_index();
  if (p >= P) return;
  const int lane = threadIdx.x % kWarp;
  const T* up = u + p * L * d;
  T* gup = grad_u + p * L * d;
  T x[VPT];
#pragma unroll
  for (int v = 0; v < VPT; ++v) {
    const int j = lane + kWarp * v;
    x[v] = j < d ? r[p * d + j] : T(0);
  }
  // replay: park r_{l} (input of layer l + 1) in grad_u[p, l]
  for (int l = 0; l < L; ++l) {
    T* hl = gup + static_cast<int64_t>(l) * d;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      const int j = lane + kWarp * v;
      if (j < d) hl[j] = x[v];
    }
    if (l + 1 < L) {
      const T* ul = up + static_cast<int64_t>(l) * d;
      T uu[VPT];
      T a = 0;
#pragma unroll
      for (int v = 0; v < VPT; ++v) {
        const int j = lane + kWarp * v;
        uu[v] = j < d ? ul[j] : T(0);
        a += uu[v] * x[v];
      }
      a = warp_sum(a);
      const T cl = c[l];
#pragma unroll
      for (int v = 0; v < VPT; ++v) x[v] = a * uu[v] + cl * x[v];
    }
  }
  T gg[VPT];
#pragma unroll
  for (int v = 0; v < VPT; ++v) {
    const int j = lane + kWarp * v;
    gg[v] = j < d ? g[p * d + j] : T(0);
  }
  for (int l = L - 1; l >= 0; --l) {
    const T* ul = up + static_cast<int64_t>(l) * d;
    T* hl = gup + static_cast<int64_t>(l) * d;
    T uu[VPT], h[VPT];
    T alpha = 0, beta = 0, gh = 0;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      const int j = lane + kWarp * v;
      uu[v] = j < d ? ul[j] : T(0);
      h[v] = j < d ? hl[j] : T(0);
      alpha += uu[v] * h[v];
      beta += gg[v] * uu[v];
      gh += gg[v] * h[v];
    }
    alpha = warp_sum(alpha);
    beta = warp_sum(beta);
    gh = warp_sum(gh);
    const T cl = c[l];
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      const int j = lane + kWarp * v;
      if (j < d) hl[j] = alpha * gg[v] + beta * h[v];
      gg[v] = beta * uu[v] + cl * gg[v];
    }
    if (lane == 0) gc_part[p * L + l] = gh;
  }
#pragma unroll
  for (int v = 0; v < VPT; ++v) {
    const int j = lane + kWarp * v;
    if (j < d) grad_r[p * d + j] = gg[v];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// generic variants (any d): the running vectors live in the output buffers

template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_gen(const T* __restrict__ r, const T* __restrict__ u,
                                                    const T* __restrict__ c, T* __restrict__ out, int64_t P, int L,
                                                    int d) {
  const int64_t p = pixel_index();
  if (p >= P) return;
  const int lane = threadIdx.x % kWarp;
  T* x = out + p * d;
  for (int j = lane; j < d; j += kWarp) x[j] = r[p * d + j];
  for (int l = 0; l < L; ++l) {
    const T* ul = u + (p * L + l) * d;
    T a = 0;
    for (int j = lane; j < d; j += kWarp) a += ul[j] * x[j];
    a = warp_sum(a);
    const T cl = c[l];
    for (int j = lane; j < d; j += kWarp) x[j] = a * ul[j] + cl * x[j];
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_gen(const T* __restrict__ g, const T* __restrict__ r,
                                                    const T* __restrict__ u, const T* __restrict__ c,
                                                    T* __restrict__ grad_r, T* __restrict__ grad_u,
                                                    T* __restrict__ gc_part, int64_t P, int L, int d) {
  const int64_t p = pixel_index();
  if (p >= P) return;
  const int lane = threadIdx.x % kWarp;
  T* gup = grad_u + p * L * d;
  const T* up = u + p * L * d;
  if (L > 0)
    for (int j = lane; j < d; j += kWarp) gup[j] = r[p * d + j];
  for (int l = 0; l + 1 < L; ++l) {
    const T* ul = up + static_cast<int64_t>(l) * d;
    const T* hl = gup + static_cast<int64_t>(l) * d;
    T* hn = gup + static_cast<int64_t>(l + 1) * d;
    T a = 0;
    for (int j = lane; j < d; j += kWarp) a += ul[j] * hl[j];
    a = warp_sum(a);
    const T cl = c[l];
    for (int j = lane; j < d; j += kWarp) hn[j] = a * ul[j] + cl * hl[j];
  }
  T* gg = grad_r + p * d;
  for (int j = lane; j < d; j += kWarp) gg[j] = g[p * d + j];
  for (int l = L - 1; l >= 0; --l) {
    const T* ul = up + static_cast<int64_t>(l) * d;
    T* hl = gup + static_cast<int64_t>(l) * d;
    T alpha = 0, beta = 0, gh = 0;
    for (int j = lane; j < d; j += kWarp) {
      alpha += ul[j] * hl[j];
      beta += gg[j] * ul[j];
      gh += gg[j] * hl[j];
    }
    alpha = warp_sum(alpha);
    beta = warp_sum(beta);
    gh = warp_sum(gh);
    const T cl = c[l];
    for (int j = lane; j < d; j += kWarp) {
      const T gj = gg[j];
      hl[j] = alpha * gj + beta * hl[j];
      gg[j] = beta * ul[j] + cl * gj;
    }
    if (lane == 0) gc_part[p * L + l] = gh;
  }
}

inline dim3 grid_for(int64_t P) { return dim3(static_cast<unsigned>((P + kWarpsPerBlock - 1) / kWarpsPerBlock)); }

}  // namespace
}  // namespace gmmkernels

// The launchers of lowrank_adapter_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
template <typename T>
cudaError_t gmmkernels::launch_lowrank_adapter_forward(const T* r, const T* u, const T* c, T* out, int64_t P, int64_t L,
                                                       int64_t d, cudaStream_t stream) {
  if (P <= 0) return cudaSuccess;
  const dim3 grid = grid_for(P);
  const int Li = static_cast<int>(L), di = static_cast<int>(d);
  if (d <= 32)
    fwd_reg<T, 1><<<grid, kThreads, 0, stream>>>(r, u, c, out, P, Li, di);
  else if (d <= 64)
    fwd_reg<T, 2><<<grid, kThreads, 0, stream>>>(r, u, c, out, P, Li, di);
  else if (d <= 128)
    fwd_reg<T, 4><<<grid, kThreads, 0, stream>>>(r, u, c, out, P, Li, di);
  else if (d <= 256)
    fwd_reg<T, 8><<<grid, kThreads, 0, stream>>>(r, u, c, out, P, Li, di);
  else
    fwd_gen<T><<<grid, kThreads, 0, stream>>>(r, u, c, out, P, Li, di);
  return cudaGetLastError();
}

template <typename T>
cudaError_t gmmkernels::launch_lowrank_adapter_backward(const T* g, const T* r, const T* u, const T* c, T* grad_r,
                                                        T* grad_u, T* gc_part, int64_t P, int64_t L, int64_t d,
                                                        cudaStream_t stream) {
  if (P <= 0) return cudaSuccess;
  const dim3 grid = grid_for(P);
  const int Li = static_cast<int>(L), di = static_cast<int>(d);
  if (d <= 32)
    bwd_reg<T, 1><<<grid, kThreads, 0, stream>>>(g, r, u, c, grad_r, grad_u, gc_part, P, Li, di);
  else if (d <= 64)
    bwd_reg<T, 2><<<grid, kThreads, 0, stream>>>(g, r, u, c, grad_r, grad_u, gc_part, P, Li, di);
  else if (d <= 128)
    bwd_reg<T, 4><<<grid, kThreads, 0, stream>>>(g, r, u, c, grad_r, grad_u, gc_part, P, Li, di);
  else if (d <= 256)
    bwd_reg<T, 8><<<grid, kThreads, 0, stream>>>(g, r, u, c, grad_r, grad_u, gc_part, P, Li, di);
  else
    bwd_gen<T><<<grid, kThreads, 0, stream>>>(g, r, u, c, grad_r, grad_u, gc_part, P, Li, di);
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_lowrank_adapter_forward)
GMMK_INSTANTIATE_LAUNCHER(launch_lowrank_adapter_backward)
