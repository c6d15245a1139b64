// Plain CUDA launchers of mixture_em_stats (csrc/cuda/mixture_em_stats_kernels.cu), called by the ATen host code
// csrc/cuda/mixture_em_stats.cpp. No torch headers: both files include it. Pointers are device pointers of
// contiguous arrays; T is float or double.
//
// Two passes over the data and a fixed-order reduction (no atomics; every split depends on the shapes only, so
// results are bitwise reproducible across runs and GPUs):
//   1. log-sum-exp: one thread per row, all K components (online, with the entropy term): log p_n, written to a
//      workspace of N values per data set, and per-block sums of log p and r log r;
//   2. statistics: blocks of 32 components x 256 features over a split of the rows recompute the logits of their
//      components, r = exp(l - log p), and accumulate sum_n r F_n in registers (F = [x, x^2] or [x, vech(x x^T)]);
//   3. the per-split partial sums are added in split order and unpacked into nk, sx, sxx.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"

namespace gmmkernels {

// Largest D of the fused CUDA kernels: diag / spherical, and full (larger problems take the two-kernel path).
constexpr int64_t kEMStatsMaxDiagD = 256;
constexpr int64_t kEMStatsMaxFullD = 16;

// Elements of T of the workspace launch_mixture_em_stats needs.
int64_t mixture_em_stats_workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full);

// x [B or 1, N, D] (x_bstride elements between data sets, 0 when one data set serves all B), W = prec [B, K, D]
// (diag) or [B, K, D, D] (full, lower triangle read), wmu = W mu [B, K, D], logc [B, K] ->
// lp [B] = sum_n log p, rl [B] = sum_nk r log r, nk [B, K], sx [B, K, D], sxx [B, K, D] or [B, K, D, D], and
// resp [B, N, K] when it is not null. Returns the launch error (cudaSuccess when fine).
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
