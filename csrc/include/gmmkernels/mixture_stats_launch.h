// Plain launchers of the CUDA kernels of gmmkernels::mixture_stats (defined in csrc/cuda/mixture_stats_kernels.cu,
// which includes no torch header). The ATen host code (csrc/cuda/mixture_stats.cpp) checks the arguments, allocates
// outputs and workspaces of the sizes given by the *_workspace functions, and calls these on the current stream.
// No torch header here either: both files include it. T is float or double.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"

namespace gmmkernels {

// Elements of T needed by the forward workspace (0 when none is needed).
int64_t mixture_stats_forward_workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full, int elem_size);

// Elements of T needed by the backward workspace; it must be zero-filled by the caller.
int64_t mixture_stats_backward_workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full, int elem_size);

// score / resp may be null (not requested). Returns the launch error (cudaSuccess when fine).
template <typename T>
cudaError_t launch_mixture_stats_forward(const T* x, const T* means, const T* prec, const T* logc, T* logp, T* score,
                                         T* resp, int64_t B, int64_t N, int64_t K, int64_t D, bool full, T* workspace,
                                         cudaStream_t stream);

// G (grad_score) / H (grad_resp) may be null (treated as zero).
template <typename T>
cudaError_t launch_mixture_stats_backward(const T* g, const T* G, const T* H, const T* x, const T* means,
                                          const T* prec, const T* logc, const T* logp, T* gx, T* gmeans, T* gprec,
                                          T* glogc, int64_t B, int64_t N, int64_t K, int64_t D, bool full, T* workspace,
                                          cudaStream_t stream);

}  // namespace gmmkernels
