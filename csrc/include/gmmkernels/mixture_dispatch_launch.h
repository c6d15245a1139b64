// Nearest-center dispatcher + centred forward noising (mixDDPM; docs/kernels.md (mixture_dispatch), docs/methods.md
// (mixDDPM)). Plain CUDA launcher on raw pointers (csrc/cuda/mixture_dispatch_kernels.cu), called by the ATen host
// code csrc/cuda/mixture_dispatch.cpp; no torch headers, so the header can be included from .cu files.
//
// For n < N, with row-major x0 [N, D], centers [K, D], a [N], sigma [N], eps [N, D] (or nullptr):
//   j[n]     = argmin_k ( |c_k|^2 - 2 x0_n . c_k )     lowest k on ties; a NaN or +-inf distance never
//                                                         wins; a row with no finite distance -> 0
//   x_t[n]   = a[n] x0_n + (1 - a[n]) c_j + sigma[n] eps_n
//   dist2[n] = |x0_n - c_j|^2                           (direct difference, no cancellation)
// Specification: gmmkernels/mixddpm_reference.py.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"

namespace gmmkernels {

// cnorm [K] = |c_k|^2, computed by the caller. All pointers are device pointers of contiguous arrays; T is float or
// double. Returns the launch error (cudaSuccess when fine). K >= 1, N, D >= 0.
template <typename T>
cudaError_t launch_mixture_dispatch(const T* x0, const T* centers, const T* cnorm, const T* a, const T* sigma,
                                    const T* eps, T* x_t, int64_t* assign, T* dist2, int64_t N, int64_t K, int64_t D,
                                    cudaStream_t stream);

}  // namespace gmmkernels
