// CUDA kernels of the fused MGDM steps (no torch headers; host side in mgdm_step.cpp, launchers declared in
// gmmkernels/mgdm_step_launch.h). Math shared with the CPU kernels: csrc/include/gmmkernels/mgdm_step.h. One thread per
// element, counter-based normals keyed by element index.
#include <cuda_runtime.h>

#include <cstdint>

#include "gmmkernels/mgdm_step.h"
#include "gmmkernels/mgdm_step_launch.h"

namespace gmmkernels {
namespace {

template <typename T>
__global__ void vi_step_kernel(T* __restrict__ state, const T* __restrict__ g, const T* __restrict__ eps, const T* __restrict__ m,
                               const T* __restrict__ inv_s2, int64_t n, int64_t P, mgdm_step::AdamCoef a, uint64_t seed,
                               uint32_t draw, T* __restrict__ v_out, T* __restrict__ e_out) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    rng::Stream st(seed, static_cast<uint64_t>(i), draw, mgdm_step::kTagVI);
    mgdm_step::vi_update<T>(state + i, state + n + i, state + 2 * n + i, state + 3 * n + i, state + 4 * n + i,
                            state + 5 * n + i, g[i], eps[i], m[i], inv_s2[i / P], a, st.normal(), v_out + i, e_out + i);
  }
}

template <typename T>
__global__ void bridge_kernel(const T* __restrict__ u, const T* __restrict__ w, T* __restrict__ out, int64_t n, double cu, double cw,
                              double sd, uint64_t seed, uint32_t draw) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    double z = 0;
    if (sd != 0) {
      rng::Stream st(seed, static_cast<uint64_t>(i), draw, mgdm_step::kTagBridge);
      z = st.normal();
    }
    out[i] = static_cast<T>(cu * static_cast<double>(u[i]) + cw * static_cast<double>(w[i]) + sd * z);
  }
}

unsigned grid_for(int64_t n) {
  const int64_t b = (n + 255) / 256;
  return (unsigned)(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

}  // namespace
}  // namespace gmmkernels

// The launchers of mgdm_step_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
template <typename T>
cudaError_t gmmkernels::launch_mgdm_vi_step(T* state, const T* g, const T* eps, const T* m, const T* inv_s2, int64_t B,
                                            int64_t P, const mgdm_step::AdamCoef& a, uint64_t seed, uint32_t draw,
                                            T* v_out, T* e_out, cudaStream_t stream) {
  const int64_t n = B * P;
  if (n == 0) return cudaSuccess;
  vi_step_kernel<T><<<grid_for(n), 256, 0, stream>>>(state, g, eps, m, inv_s2, n, P, a, seed, draw, v_out, e_out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t gmmkernels::launch_mgdm_bridge(const T* u, const T* w, T* out, int64_t n, double cu, double cw, double sd,
                                           uint64_t seed, uint32_t draw, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  bridge_kernel<T><<<grid_for(n), 256, 0, stream>>>(u, w, out, n, cu, cw, sd, seed, draw);
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_mgdm_vi_step)
GMMK_INSTANTIATE_LAUNCHER(launch_mgdm_bridge)
