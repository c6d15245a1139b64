// CUDA kernels of mixture_em_stats (no torch headers; launched from mixture_em_stats.cpp, launchers declared in
// gmmkernels/mixture_em_stats_launch.h). The E-step + statistics kernels are the block programs of
// gmmkernels/mixture_em_stats_blocks.h (which the tests also run on CPU threads); the maths is in
// gmmkernels/mixture_em_stats.h. mixture_em_mstep (mstep_kernel): one block per mixture, one thread per component.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "gmmkernels/mixture_em_stats.h"
#include "gmmkernels/mixture_em_stats_blocks.h"
#include "gmmkernels/mixture_em_stats_launch.h"

namespace gmmkernels {
namespace {

using namespace gmmkernels::mixture_em_stats;

// M-step (mixture_em_mstep): one block per mixture. Its first thread sums the weights' normaliser (in index order,
// as the CPU kernel does), then the block's threads take one component each: the header's mstep_component, with
// the D x D work matrices of a full covariance in the outputs scale and W themselves (global memory; the dispatcher
// keeps D small enough for that).
template <typename T>
__global__ void mstep_kernel(const T* __restrict__ nk, const T* __restrict__ sx, const T* __restrict__ sxx,
                             T* __restrict__ logits, T* __restrict__ mu, T* __restrict__ scale, T* __restrict__ W,
                             T* __restrict__ logc, bool* __restrict__ ok, int64_t K, int64_t D, int kind, T reg, T eps,
                             bool low) {
  __shared__ T total;
  const int64_t b = blockIdx.x;
  if (threadIdx.x == 0) total = mstep_total(nk + b * K, K, eps);
  __syncthreads();
  const bool full = kind == kFull;
  const int64_t s2 = full ? D * D : D, sc = full ? D * D : kind == kSpherical ? 1 : D;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const int64_t q = b * K + k;
    ok[q] = mstep_component<T>(nk[q], sx + q * D, sxx + q * s2, D, kind, low, reg, eps, total, logits + q,
                               mu + q * D, scale + q * sc, W + q * s2, logc + q);
  }
}

}  // namespace
}  // namespace gmmkernels

// The launchers of mixture_em_stats_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
template <typename T>
cudaError_t gmmkernels::launch_mixture_em_stats(const T* x, int64_t x_bstride, const T* W, const T* wmu, const T* logc,
                                                T* lp, T* rl, T* nk, T* sx, T* sxx, T* resp, int64_t B, int64_t N,
                                                int64_t K, int64_t D, bool full, T* workspace, cudaStream_t stream) {
  return run_em_stats(CudaLaunch{stream}, x, x_bstride, W, wmu, logc, lp, rl, nk, sx, sxx, resp, B, N, K, D, full,
                      workspace);
}

GMMK_INSTANTIATE_LAUNCHER(launch_mixture_em_stats)

template <typename T>
cudaError_t gmmkernels::launch_mixture_em_mstep(const T* nk, const T* sx, const T* sxx, T* logits, T* means, T* scale,
                                                T* W, T* logc, bool* ok, int64_t B, int64_t K, int64_t D, int cov_kind,
                                                T reg_covar, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  const bool dbl = sizeof(T) == sizeof(double);
  const T eps = T(10) * std::numeric_limits<T>::epsilon();
  const int threads = static_cast<int>(std::min<int64_t>(128, ceil_div(K, 32) * 32));
  mstep_kernel<T><<<(unsigned)B, threads, 0, stream>>>(nk, sx, sxx, logits, means, scale, W, logc, ok, K, D, cov_kind,
                                                       reg_covar, eps, !dbl);
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_mixture_em_mstep)
