// Plain CUDA launchers of mixture_em_stats (csrc/cuda/mixture_em_stats_kernels.cu), called by the ATen host code
// csrc/cuda/mixture_em_stats.cpp. No torch headers: both files include it. Pointers are device pointers of
// contiguous arrays; T is float or double.
//
// The kernels are the block programs of gmmkernels/mixture_em_stats_blocks.h: one pass over the data for K <= 32,
// two above (log-sum-exp, then statistics), then a fixed-order reduction of the per-split partial sums (no atomics;
// every split depends on the shapes only, so results are bitwise reproducible across runs and GPUs). The N x K
// responsibilities reach global memory only when resp is asked for.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"

namespace gmmkernels {

// x [B or 1, N, D] (x_bstride elements between data sets, 0 when one data set serves all B), W = prec [B, K, D]
// (diag) or [B, K, D, D] (full, lower triangle read), wmu = W mu [B, K, D], logc [B, K] ->
// lp [B] = sum_n log p, rl [B] = sum_nk r log r, nk [B, K], sx [B, K, D], sxx [B, K, D] or [B, K, D, D], and
// resp [B, N, K] when it is not null; workspace holds mixture_em_stats::Plan(B, N, K, D, full).workspace(B, N, K)
// elements (gmmkernels/mixture_em_stats_blocks.h). Returns the launch error (cudaSuccess when fine).
template <typename T>
cudaError_t launch_mixture_em_stats(const T* x, int64_t x_bstride, const T* W, const T* wmu, const T* logc, T* lp, T* rl,
                                    T* nk, T* sx, T* sxx, T* resp, int64_t B, int64_t N, int64_t K, int64_t D,
                                    bool full, T* workspace, cudaStream_t stream);

// M-step: nk [B, K], sx [B, K, D], sxx [B, K, D] or [B, K, D, D] (cov_kind 2, full) -> logits [B, K], means
// [B, K, D], scale ([B, K, D] diag, [B, K] spherical, [B, K, D, D] full), W ([B, K, D], or [B, K, D, D] full), logc
// [B, K], ok [B, K] (csrc/include/gmmkernels/mixture_em_stats.h: mstep_component). B < 2^31.
template <typename T>
cudaError_t launch_mixture_em_mstep(const T* nk, const T* sx, const T* sxx, T* logits, T* means, T* scale, T* W,
                                    T* logc, bool* ok, int64_t B, int64_t K, int64_t D, int cov_kind, T reg_covar,
                                    cudaStream_t stream);

}  // namespace gmmkernels
