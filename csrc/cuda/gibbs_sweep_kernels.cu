// CUDA kernel of gibbs_sweep: one block per chain, one launch per sweep (no torch headers).
// Phases: (1) per-component constants to shared memory; (2) one thread per point draws z_n (one Philox uniform,
// two passes over K, nothing of size N x K stored); (3) sufficient statistics with a fixed split of the points
// into segments and a fixed-order combine (deterministic, no atomics); (4) conjugate draws (Dirichlet via gamma,
// Normal-Inverse-Gamma per (k, d)). Shared math and random streams: csrc/include/gmmkernels/gibbs_sweep.h; launcher
// declared in gmmkernels/gibbs_sweep_launch.h.
#include <cuda_runtime.h>

#include <cstdint>

#include "gmmkernels/gibbs_sweep.h"
#include "gmmkernels/gibbs_sweep_launch.h"

namespace gmmkernels {
namespace {

template <typename T, typename Acc>
__global__ void gibbs_sweep_kernel(const T* __restrict__ x, int64_t x_bstride, const T* __restrict__ logw, const T* __restrict__ mu,
                                   const T* __restrict__ var, const T* __restrict__ m0, int32_t* __restrict__ z,
                                   T* __restrict__ logw_o, T* __restrict__ mu_o, T* __restrict__ var_o, int N, int K, int D,
                                   double alpha, double kappa0, double a0, double b0, uint64_t seed, uint32_t step,
                                   uint64_t chain0) {
  extern __shared__ unsigned char smem_raw[];
  Acc* logc = reinterpret_cast<Acc*>(smem_raw);   // K
  Acc* ivar = logc + K;                            // K*D
  Acc* st1 = ivar + K * D;                         // K*(D+1): sum x (d < D) or count (d == D)
  Acc* st2 = st1 + K * (D + 1);                    // K*(D+1): sum x^2
  Acc* p1 = st2 + K * (D + 1);                     // blockDim
  Acc* p2 = p1 + blockDim.x;                       // blockDim
  const size_t goff = (sizeof(Acc) * (size_t)(K + K * D + 2 * K * (D + 1) + 2 * blockDim.x) + 7) & ~size_t(7);
  double* g = reinterpret_cast<double*>(smem_raw + goff);  // K (8-byte aligned)
  const int64_t b = blockIdx.x;
  const uint64_t gb = chain0 + static_cast<uint64_t>(b);  // the chain's index in the whole run
  const int tid = threadIdx.x, nt = blockDim.x;
  const T* mub = mu + b * K * D;
  const T* xb = x + b * x_bstride;

  for (int e = tid; e < K * D; e += nt) ivar[e] = Acc(1) / static_cast<Acc>(var[b * K * D + e]);
  __syncthreads();
  for (int k = tid; k < K; k += nt) {
    Acc ld = 0;
    for (int d = 0; d < D; ++d) ld -= log(ivar[k * D + d]);
    logc[k] = static_cast<Acc>(logw[b * K + k]) - Acc(0.5) * ld;
  }
  __syncthreads();

  for (int n = tid; n < N; n += nt) {
    rng::Stream s(seed, gb * N + n, step, gibbs_sweep::kTagAssign);
    z[b * N + n] = gibbs_sweep::draw_assignment<T, Acc>(xb + (int64_t)n * D, D, K, logc, mub, ivar, s.uniform());
  }
  __syncthreads();  // z (global) visible to the block

  const int items = K * (D + 1);
  for (int base = 0; base < items; base += nt) {
    const int ni = min(nt, items - base);
    const int nseg = nt / ni;
    const int item = base + tid % ni, seg = tid / ni;
    Acc q1 = 0, q2 = 0;
    if (seg < nseg) {
      const int k = item / (D + 1), d = item % (D + 1);
      const int lo = (int)((int64_t)N * seg / nseg), hi = (int)((int64_t)N * (seg + 1) / nseg);
      for (int n = lo; n < hi; ++n) {
        if (z[b * N + n] != k) continue;
        if (d == D) {
          q1 += Acc(1);
        } else {
          const Acc v = static_cast<Acc>(xb[(int64_t)n * D + d]);
          q1 += v;
          q2 += v * v;
        }
      }
    }
    p1[tid] = q1;
    p2[tid] = q2;
    __syncthreads();
    if (tid < ni) {
      Acc s1 = 0, s2 = 0;
      for (int sg = 0; sg < nseg; ++sg) {
        s1 += p1[sg * ni + tid];
        s2 += p2[sg * ni + tid];
      }
      st1[base + tid] = s1;
      st2[base + tid] = s2;
    }
    __syncthreads();
  }

  for (int k = tid; k < K; k += nt) {
    rng::Stream s(seed, gb * K + k, step, gibbs_sweep::kTagWeight);
    g[k] = s.gamma(alpha + static_cast<double>(st1[k * (D + 1) + D]));
  }
  __syncthreads();
  if (tid == 0) {
    double gs = 0;
    for (int k = 0; k < K; ++k) gs += g[k];
    const double lgs = log(gs);
    for (int k = 0; k < K; ++k) logw_o[b * K + k] = static_cast<T>(log(g[k]) - lgs);
  }
  for (int e = tid; e < K * D; e += nt) {
    const int k = e / D, d = e % D;
    rng::Stream s(seed, gb * K * D + e, step, gibbs_sweep::kTagParam);
    double mm, vv;
    gibbs_sweep::draw_param(static_cast<double>(st1[k * (D + 1) + D]), static_cast<double>(st1[k * (D + 1) + d]),
                            static_cast<double>(st2[k * (D + 1) + d]), static_cast<double>(m0[d]), kappa0, a0, b0, s,
                            &mm, &vv);
    mu_o[b * K * D + e] = static_cast<T>(mm);
    var_o[b * K * D + e] = static_cast<T>(vv);
  }
}

}  // namespace
}  // namespace gmmkernels

// The launchers of gibbs_sweep_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
template <typename T>
cudaError_t gmmkernels::launch_gibbs_sweep(const T* x, int64_t x_bstride, const T* logw, const T* mu, const T* var,
                                           const T* m0, int32_t* z, T* logw_o, T* mu_o, T* var_o, int64_t B, int64_t N,
                                           int64_t K, int64_t D, double alpha, double kappa0, double a0, double b0,
                                           uint64_t seed, uint32_t step, uint64_t chain0,
                                           cudaStream_t stream) {
  using Acc = T;  // float chains accumulate in float (sums over one chain's points), double in double
  if (B == 0) return cudaSuccess;
  const int threads = 128;
  size_t smem = ((sizeof(Acc) * (size_t)(K + K * D + 2 * K * (D + 1) + 2 * threads) + 7) & ~size_t(7)) + sizeof(double) * K;
  auto kern = gibbs_sweep_kernel<T, Acc>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  kern<<<(unsigned)B, threads, smem, stream>>>(x, x_bstride, logw, mu, var, m0, z, logw_o, mu_o, var_o, (int)N, (int)K, (int)D, alpha,
                                               kappa0, a0, b0, seed, step, chain0);
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_gibbs_sweep)
