// CUDA kernels of mixture_suffstats (no torch headers; launched from mixture_suffstats.cpp, launchers declared in
// gmmkernels/mixture_suffstats_launch.h): the block programs of gmmkernels/mixture_suffstats_blocks.h, which the
// tests also run on CPU threads.
#include <cuda_runtime.h>

#include <cstdint>

#include "gmmkernels/mixture_suffstats_blocks.h"
#include "gmmkernels/mixture_suffstats_launch.h"

// The launchers of mixture_suffstats_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
template <typename T>
cudaError_t gmmkernels::launch_mixture_suffstats(const T* x, const T* r, T* nk, T* sx, T* sxx, int64_t B, int64_t N,
                                                 int64_t K, int64_t D, int64_t x_bstride, bool full, T* diag_tmp,
                                                 T* workspace, cudaStream_t stream) {
  return mixture_suffstats::run_suffstats(CudaLaunch{stream}, x, r, nk, sx, sxx, B, N, K, D, x_bstride, full, diag_tmp,
                                          workspace);
}

GMMK_INSTANTIATE_LAUNCHER(launch_mixture_suffstats)
