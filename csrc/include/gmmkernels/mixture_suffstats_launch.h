// Plain CUDA launcher of mixture_suffstats (csrc/cuda/mixture_suffstats_kernels.cu), called by the ATen host code
// csrc/cuda/mixture_suffstats.cpp. No torch headers: both files include it. Pointers are device pointers of
// contiguous arrays; T is float or double.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"

namespace gmmkernels {

// The split of N used by launch_mixture_suffstats (full: the split of the x x^T kernel); a function of the shapes
// only, so results are bitwise reproducible across runs and GPUs. Returns S >= 1 and sets *chunk (rows per chunk, a
// multiple of 64).
int64_t mixture_suffstats_splits(int64_t B, int64_t N, int64_t K, int64_t D, bool full, int64_t* chunk);

// Elements of T of the workspace launch_mixture_suffstats needs (0 when none).
int64_t mixture_suffstats_workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full);

// x [B or 1, N, D] (x_bstride elements between batch entries, 0 when one data set serves all B), r [B, N, K] ->
// nk [B, K], sx [B, K, D], sxx [B, K, D] (!full) or [B, K, D, D] (full). diag_tmp [B, K, D] is scratch when full
// (else unused); workspace holds mixture_suffstats_workspace elements. Returns the launch error (cudaSuccess when fine).
template <typename T>
cudaError_t launch_mixture_suffstats(const T* x, const T* r, T* nk, T* sx, T* sxx, int64_t B, int64_t N, int64_t K,
                                     int64_t D, int64_t x_bstride, bool full, T* diag_tmp, T* workspace,
                                     cudaStream_t stream);

}  // namespace gmmkernels
