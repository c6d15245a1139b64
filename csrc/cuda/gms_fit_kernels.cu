// CUDA kernels of the GMS fit and fused step (no torch headers; host side in gms_fit.cpp, launchers declared in
// gmmkernels/gms_fit_launch.h). Math shared with the CPU kernels: csrc/include/gmmkernels/gms_fit.h. One thread per
// element; the Adan solver keeps its 15 state values in registers for all iterations (one launch). The closed form and
// the step moments are computed in double.
#include <cuda_runtime.h>

#include <cstdint>

#include "gmmkernels/gms_fit.h"
#include "gmmkernels/gms_fit_launch.h"

namespace gmmkernels {
namespace {

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) closed_kernel(const T* __restrict__ M1, const T* __restrict__ V,
                                                          const T* __restrict__ M3, T* __restrict__ o1, T* __restrict__ o2,
                                                          T* __restrict__ ov, int64_t n, double w, double floor_frac) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const gms_fit::Fit f = gms_fit::closed_fit(static_cast<double>(M1[i]), static_cast<double>(V[i]),
                                               static_cast<double>(M3[i]), w, floor_frac);
    o1[i] = static_cast<T>(f.mu1);
    o2[i] = static_cast<T>(f.mu2);
    ov[i] = static_cast<T>(f.v);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) adan_kernel(const T* __restrict__ M1, const T* __restrict__ V, const T* __restrict__ M3,
                                                        T* __restrict__ o1, T* __restrict__ o2, T* __restrict__ ov, int64_t n, T w,
                                                        T scale, int iters, double lr) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    gms_fit::adan_fit<T>(M1[i], V[i], M3[i], w, scale, iters, lr, o1 + i, o2 + i, ov + i);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) step_kernel(const T* __restrict__ X, const T* __restrict__ E1, const T* __restrict__ E2,
                                                        const T* __restrict__ E3, T* __restrict__ out, T* __restrict__ q1,
                                                        T* __restrict__ q2, T* __restrict__ qv, int64_t n, gms_fit::StepParams P) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    double a, b, c;
    const double x = gms_fit::step_element<T>(static_cast<double>(X[i]), static_cast<double>(E1[i]),
                                              static_cast<double>(E2[i]), static_cast<double>(E3[i]), i, P, &a, &b, &c);
    out[i] = static_cast<T>(x);
    if (q1 != nullptr) {
      q1[i] = static_cast<T>(a);
      q2[i] = static_cast<T>(b);
      qv[i] = static_cast<T>(c);
    }
  }
}

}  // namespace
}  // namespace gmmkernels

// The launchers of gms_fit_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
template <typename T>
cudaError_t gmmkernels::launch_gms_fit(const T* M1, const T* V, const T* M3, T* o1, T* o2, T* ov, int64_t n, int method,
                                       double w, int iters, double lr, double floor_frac, double scale,
                                       cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (method == gms_fit::kAdan) {
    adan_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(M1, V, M3, o1, o2, ov, n, static_cast<T>(w), static_cast<T>(scale), iters, lr);
  } else {
    closed_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(M1, V, M3, o1, o2, ov, n, w, floor_frac);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t gmmkernels::launch_gms_step(const T* X, const T* E1, const T* E2, const T* E3, T* out, T* q1, T* q2, T* qv,
                                        int64_t n, const gms_fit::StepParams& P, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  step_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(X, E1, E2, E3, out, q1, q2, qv, n, P);
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_gms_fit)
GMMK_INSTANTIATE_LAUNCHER(launch_gms_step)
