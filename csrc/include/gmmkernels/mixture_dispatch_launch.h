// Nearest-center dispatcher + centred forward noising (mixDDPM, kernel K5 of algorithms.md section 4.5).
// Plain launchers on raw pointers; no torch headers, so the header can be included from .cu files.
//
// For n < N, with row-major x0 [N, D], centers [K, D], a [N], sigma [N], eps [N, D] (or nullptr):
//   j[n]     = argmin_k ( |c_k|^2 - 2 x0_n . c_k )     lowest k on ties; a NaN or +-inf distance never
//                                                         wins; a row with no finite distance -> 0
//   x_t[n]   = a[n] x0_n + (1 - a[n]) c_j + sigma[n] eps_n
//   dist2[n] = |x0_n - c_j|^2                           (direct difference, no cancellation)
// Specification: gmmkernels/mixddpm_reference.py.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#include <cuda_runtime.h>
#else
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
#endif

namespace gmmkernels {

// cnorm [K] = |c_k|^2, computed by the caller. All pointers are device pointers of contiguous arrays.
// Returns 0 on success, otherwise a cudaError_t value (the caller raises). K >= 1, N, D >= 0.
int mixture_dispatch_cuda_f32(const float* x0, const float* centers, const float* cnorm, const float* a,
                              const float* sigma, const float* eps, float* x_t, int64_t* assign, float* dist2,
                              int64_t N, int64_t K, int64_t D, cudaStream_t stream);
int mixture_dispatch_cuda_f64(const double* x0, const double* centers, const double* cnorm, const double* a,
                              const double* sigma, const double* eps, double* x_t, int64_t* assign, double* dist2,
                              int64_t N, int64_t K, int64_t D, cudaStream_t stream);

}  // namespace gmmkernels
