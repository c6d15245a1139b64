// CUDA kernels of gibbs_sweep (no torch headers; launched from gibbs_sweep.cpp, launcher declared in
// gmmkernels/gibbs_sweep_launch.h): the block programs of gmmkernels/gibbs_sweep_blocks.h (a warp per chain for small
// chains, a block per chain above), which the tests also run on CPU threads; the maths and random streams are in
// gmmkernels/gibbs_sweep.h.
#include <cuda_runtime.h>

#include <cstdint>

#include "gmmkernels/gibbs_sweep_blocks.h"
#include "gmmkernels/gibbs_sweep_launch.h"

// The launchers of gibbs_sweep_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
template <typename T>
cudaError_t gmmkernels::launch_gibbs_sweep(const T* x, int64_t x_bstride, const T* logw, const T* mu, const T* var,
                                           const T* m0, int32_t* z, T* logw_o, T* mu_o, T* var_o, int64_t B, int64_t N,
                                           int64_t K, int64_t D, double alpha, double kappa0, double a0, double b0,
                                           uint64_t seed, uint32_t step, uint64_t chain0, cudaStream_t stream) {
  const gibbs_sweep::SweepParams<T> p{x,  x_bstride, logw,   mu,     var,    m0,     z,  logw_o, mu_o,
                                      var_o, B, (int)N, (int)K, (int)D, alpha, kappa0, a0, b0,
                                      seed, step, chain0};
  return gibbs_sweep::run_gibbs_sweep(CudaLaunch{stream}, p);
}

GMMK_INSTANTIATE_LAUNCHER(launch_gibbs_sweep)
