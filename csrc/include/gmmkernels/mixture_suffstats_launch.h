// Plain CUDA launcher of mixture_suffstats (csrc/cuda/mixture_suffstats_kernels.cu), called by the ATen host code
// csrc/cuda/mixture_suffstats.cpp. No torch headers: both files include it. Pointers are device pointers of
// contiguous arrays; T is float or double.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"

namespace gmmkernels {

// x [B or 1, N, D] (x_bstride elements between batch entries, 0 when one data set serves all B), r [B, N, K] ->
// nk [B, K], sx [B, K, D], sxx [B, K, D] (!full) or [B, K, D, D] (full). diag_tmp [B, K, D] is scratch when full
// (else unused); workspace holds mixture_suffstats::workspace(B, N, K, D, full) elements (the split of N, a function
// of the shapes only: gmmkernels/mixture_suffstats_blocks.h). Returns the launch error (cudaSuccess when fine).
template <typename T>
cudaError_t launch_mixture_suffstats(const T* x, const T* r, T* nk, T* sx, T* sxx, int64_t B, int64_t N, int64_t K,
                                     int64_t D, int64_t x_bstride, bool full, T* diag_tmp, T* workspace,
                                     cudaStream_t stream);

}  // namespace gmmkernels
