// Plain CUDA launchers of the GMS fit and fused step (csrc/cuda/gms_fit_kernels.cu), called by the ATen host code
// csrc/cuda/gms_fit.cpp. No torch headers: both files include it. Pointers are device pointers of contiguous arrays of
// n elements; T is float or double. Both return the launch error (cudaSuccess when fine); n = 0 launches nothing.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"
#include "gmmkernels/gms_fit.h"

namespace gmmkernels {

// gms_fit: (M1, V, M3) -> (o1, o2, ov) = (mu1, mu2, v) per element; method kClosed or kAdan (iters, lr; scale =
// adan_scale), w the weight of component 1, floor_frac the variance floor of the closed form.
template <typename T>
cudaError_t launch_gms_fit(const T* M1, const T* V, const T* M3, T* o1, T* o2, T* ov, int64_t n, int method, double w,
                           int iters, double lr, double floor_frac, double scale, cudaStream_t stream);

// gms_step: x_t and the heads (E1, E2, E3) -> out = x_s; q1, q2, qv receive the fit (mu1, mu2, v) or are all null.
template <typename T>
cudaError_t launch_gms_step(const T* X, const T* E1, const T* E2, const T* E3, T* out, T* q1, T* q2, T* qv, int64_t n,
                            const gms_fit::StepParams& P, cudaStream_t stream);

}  // namespace gmmkernels
