// Plain CUDA launchers of the fused MGDM steps (csrc/cuda/mgdm_step_kernels.cu), called by the ATen host code
// csrc/cuda/mgdm_step.cpp. No torch headers: both files include it. Pointers are device pointers of contiguous arrays;
// T is float or double. Both return the launch error (cudaSuccess when fine); empty problems launch nothing.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"
#include "gmmkernels/mgdm_step.h"

namespace gmmkernels {

// mgdm_vi_step: state [6, B, P] (mu, rho, m_mu, m_rho, v_mu, v_rho; updated in place), g = grad_v, eps, m [B, P],
// inv_s2 [B] -> v_out, e_out [B, P].
template <typename T>
cudaError_t launch_mgdm_vi_step(T* state, const T* g, const T* eps, const T* m, const T* inv_s2, int64_t B, int64_t P,
                                const mgdm_step::AdamCoef& a, uint64_t seed, uint32_t draw, T* v_out, T* e_out,
                                cudaStream_t stream);

// mgdm_bridge: out = cu * u + cw * w + sd * z over n elements.
template <typename T>
cudaError_t launch_mgdm_bridge(const T* u, const T* w, T* out, int64_t n, double cu, double cw, double sd, uint64_t seed,
                               uint32_t draw, cudaStream_t stream);

}  // namespace gmmkernels
