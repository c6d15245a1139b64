// Plain CUDA launcher of gibbs_sweep (csrc/cuda/gibbs_sweep_kernels.cu), called by the ATen host code
// csrc/cuda/gibbs_sweep.cpp. No torch headers: both files include it. Pointers are device pointers of contiguous
// arrays; T is float or double.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"

namespace gmmkernels {

// One sweep of B chains (model and random streams: gmmkernels/gibbs_sweep.h): x [B or 1, N, D] (x_bstride elements
// between batch entries, 0 when one data set serves all B), logw [B, K], mu / var [B, K, D], m0 [D] -> z [B, N] and
// the next logw_o, mu_o, var_o; chain b draws the random streams of chain chain0 + b. Returns the launch error (cudaSuccess when fine).
template <typename T>
cudaError_t launch_gibbs_sweep(const T* x, int64_t x_bstride, const T* logw, const T* mu, const T* var, const T* m0,
                               int32_t* z, T* logw_o, T* mu_o, T* var_o, int64_t B, int64_t N, int64_t K, int64_t D,
                               double alpha, double kappa0, double a0, double b0, uint64_t seed, uint32_t step,
                               uint64_t chain0, cudaStream_t stream);

}  // namespace gmmkernels
