// CUDA kernels of gibbs_sweep (no torch headers). Two layouts of the same sweep:
//  - warp kernel (small chains, the common case of many chains): one warp per chain, kWarps chains per block, the
//    chain's constants and statistics in the warp's slice of shared memory, only warp-level synchronisation;
//  - block kernel (chains whose per-chain state does not fit a warp's slice): one block per chain.
// Phases of both: (1) per-component constants; (2) one thread per point draws z_n (one Philox uniform, two passes over
// K, nothing of size N x K stored); (3) sufficient statistics with a fixed split of the points and a fixed-order
// combine (deterministic, no atomics); (4) conjugate draws (Dirichlet via gamma, Normal-Inverse-Gamma per (k, d)).
// Shared math and random streams: csrc/include/gmmkernels/gibbs_sweep.h (so the draws equal the CPU kernel's up to
// the rounding of the statistics' sums); launcher declared in gmmkernels/gibbs_sweep_launch.h.
#include <cuda_runtime.h>

#include <cstdint>

#include "gmmkernels/gibbs_sweep.h"
#include "gmmkernels/gibbs_sweep_launch.h"

namespace gmmkernels {
namespace {

// The phases both layouts share, spread over threads t, t + nt, ... of the chain's group (a block or a warp); the
// caller synchronises the group between them.
// (1a) ivar = 1 / var of chain b.
template <typename T, typename Acc>
__device__ void chain_ivar(int t, int nt, const T* var_b, int K, int D, Acc* ivar) {
  for (int e = t; e < K * D; e += nt) ivar[e] = Acc(1) / static_cast<Acc>(var_b[e]);
}
// (1b) logc_k = log w_k + 1/2 sum_d log ivar_kd.
template <typename T, typename Acc>
__device__ void chain_logc(int t, int nt, const T* logw_b, const Acc* ivar, int K, int D, Acc* logc) {
  for (int k = t; k < K; k += nt) {
    Acc ld = 0;
    for (int d = 0; d < D; ++d) ld -= log(ivar[k * D + d]);
    logc[k] = static_cast<Acc>(logw_b[k]) - Acc(0.5) * ld;
  }
}
// (2) z_n for the points n = t, t + nt, ...
template <typename T, typename Acc>
__device__ void chain_assignments(int t, int nt, const T* xb, const T* mub, const Acc* logc, const Acc* ivar, int N,
                                  int K, int D, uint64_t seed, uint64_t gb, uint32_t step, int32_t* zb) {
  for (int n = t; n < N; n += nt) {
    rng::Stream s(seed, gb * N + n, step, gibbs_sweep::kTagAssign);
    zb[n] = gibbs_sweep::draw_assignment<T, Acc>(xb + (int64_t)n * D, D, K, logc, mub, ivar, s.uniform());
  }
}
// (3) the sums of statistics item (k, d) over the points n = lo, lo + step, ... < hi: (count, -) for d = D, else
// (sum x_d, sum x_d^2), over the points assigned to k.
template <typename T, typename Acc>
__device__ void item_sums(int lo, int hi, int step_n, const int32_t* zb, const T* xb, int k, int d, int D, Acc* q1,
                          Acc* q2) {
  Acc a = 0, c = 0;
  for (int n = lo; n < hi; n += step_n) {
    if (zb[n] != k) continue;
    if (d == D) {
      a += Acc(1);
    } else {
      const Acc v = static_cast<Acc>(xb[(int64_t)n * D + d]);
      a += v;
      c += v * v;
    }
  }
  *q1 = a;
  *q2 = c;
}
// (4a) the Dirichlet's gammas g_k.
template <typename Acc>
__device__ void chain_gammas(int t, int nt, const Acc* st1, int K, int D, double alpha, uint64_t seed, uint64_t gb,
                             uint32_t step, double* g) {
  for (int k = t; k < K; k += nt) {
    rng::Stream s(seed, gb * K + k, step, gibbs_sweep::kTagWeight);
    g[k] = s.gamma(alpha + static_cast<double>(st1[k * (D + 1) + D]));
  }
}
// (4b) log w = log g - log sum g (each thread sums the K gammas in order: every thread gets the same total), and the
// Normal-Inverse-Gamma draws of (mu, var) per (k, d).
template <typename T, typename Acc>
__device__ void chain_draws(int t, int nt, const double* g, const Acc* st1, const Acc* st2, const T* m0, int K, int D,
                            double kappa0, double a0, double b0, uint64_t seed, uint64_t gb, uint32_t step, T* logw_ob,
                            T* mu_ob, T* var_ob) {
  double gs = 0;
  for (int k = 0; k < K; ++k) gs += g[k];
  const double lgs = log(gs);
  for (int k = t; k < K; k += nt) logw_ob[k] = static_cast<T>(log(g[k]) - lgs);
  for (int e = t; e < K * D; e += nt) {
    const int k = e / D, d = e % D;
    rng::Stream s(seed, gb * K * D + e, step, gibbs_sweep::kTagParam);
    double mm, vv;
    gibbs_sweep::draw_param(static_cast<double>(st1[k * (D + 1) + D]), static_cast<double>(st1[k * (D + 1) + d]),
                            static_cast<double>(st2[k * (D + 1) + d]), static_cast<double>(m0[d]), kappa0, a0, b0, s,
                            &mm, &vv);
    mu_ob[e] = static_cast<T>(mm);
    var_ob[e] = static_cast<T>(vv);
  }
}

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

  chain_ivar<T, Acc>(tid, nt, var + b * K * D, K, D, ivar);
  __syncthreads();
  chain_logc<T, Acc>(tid, nt, logw + b * K, ivar, K, D, logc);
  __syncthreads();
  chain_assignments<T, Acc>(tid, nt, xb, mub, logc, ivar, N, K, D, seed, gb, step, z + b * N);
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
      item_sums<T, Acc>(lo, hi, 1, z + b * N, xb, k, d, D, &q1, &q2);
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

  chain_gammas<Acc>(tid, nt, st1, K, D, alpha, seed, gb, step, g);
  __syncthreads();
  chain_draws<T, Acc>(tid, nt, g, st1, st2, m0, K, D, kappa0, a0, b0, seed, gb, step, logw_o + b * K, mu_o + b * K * D,
                      var_o + b * K * D);
}

constexpr int kWarps = 8;                 // chains (warps) per block of the warp kernel
constexpr size_t kWarpSliceBytes = 4096;  // per-chain state that selects the warp kernel, at most

// Shared-memory slice of one chain in the warp kernel: logc [K], ivar [K*D], st1 / st2 [K*(D+1)] (Acc), then g [K]
// (double, 8-byte aligned).
template <typename Acc>
__host__ __device__ inline size_t warp_slice_acc_bytes(int64_t K, int64_t D) {
  return (sizeof(Acc) * (size_t)(K + K * D + 2 * K * (D + 1)) + 7) & ~size_t(7);
}
template <typename Acc>
__host__ __device__ inline size_t warp_slice_bytes(int64_t K, int64_t D) {
  return warp_slice_acc_bytes<Acc>(K, D) + sizeof(double) * (size_t)K;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {  // fixed-order butterfly: every lane gets the same total
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kWarps * 32) gibbs_sweep_warp_kernel(
    const T* __restrict__ x, int64_t x_bstride, const T* __restrict__ logw, const T* __restrict__ mu,
    const T* __restrict__ var, const T* __restrict__ m0, int32_t* __restrict__ z, T* __restrict__ logw_o,
    T* __restrict__ mu_o, T* __restrict__ var_o, int64_t B, int N, int K, int D, double alpha, double kappa0,
    double a0, double b0, uint64_t seed, uint32_t step, uint64_t chain0) {
  extern __shared__ unsigned char smem_raw[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = (int64_t)blockIdx.x * kWarps + warp;
  if (b >= B) return;  // whole warps only: the kernel synchronises within a warp, never across the block
  unsigned char* slice = smem_raw + (size_t)warp * warp_slice_bytes<Acc>(K, D);
  Acc* logc = reinterpret_cast<Acc*>(slice);  // K
  Acc* ivar = logc + K;                       // K*D
  Acc* st1 = ivar + K * D;                    // K*(D+1): sum x (d < D) or count (d == D)
  Acc* st2 = st1 + K * (D + 1);               // K*(D+1): sum x^2
  double* g = reinterpret_cast<double*>(slice + warp_slice_acc_bytes<Acc>(K, D));  // K
  const uint64_t gb = chain0 + static_cast<uint64_t>(b);
  const T* mub = mu + b * K * D;
  const T* xb = x + b * x_bstride;
  int32_t* zb = z + b * N;

  chain_ivar<T, Acc>(lane, 32, var + b * K * D, K, D, ivar);
  __syncwarp();
  chain_logc<T, Acc>(lane, 32, logw + b * K, ivar, K, D, logc);
  __syncwarp();
  chain_assignments<T, Acc>(lane, 32, xb, mub, logc, ivar, N, K, D, seed, gb, step, zb);
  __syncwarp();  // the lanes' z (global) visible to the warp

  // statistics: lane l sums its points l, l + 32, ... in order; the 32 partial sums are combined by a butterfly
  for (int item = 0; item < K * (D + 1); ++item) {
    const int k = item / (D + 1), d = item % (D + 1);
    Acc q1, q2;
    item_sums<T, Acc>(lane, N, 32, zb, xb, k, d, D, &q1, &q2);
    q1 = warp_sum(q1);
    q2 = warp_sum(q2);
    if (lane == 0) {
      st1[item] = q1;
      st2[item] = q2;
    }
  }
  __syncwarp();

  chain_gammas<Acc>(lane, 32, st1, K, D, alpha, seed, gb, step, g);
  __syncwarp();
  chain_draws<T, Acc>(lane, 32, g, st1, st2, m0, K, D, kappa0, a0, b0, seed, gb, step, logw_o + b * K, mu_o + b * K * D,
                      var_o + b * K * D);
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
  const size_t wslice = warp_slice_bytes<Acc>(K, D);
  if (wslice <= kWarpSliceBytes) {  // many small chains: a warp each
    const int64_t blocks = (B + kWarps - 1) / kWarps;
    gibbs_sweep_warp_kernel<T, Acc><<<(unsigned)blocks, kWarps * 32, kWarps * wslice, stream>>>(
        x, x_bstride, logw, mu, var, m0, z, logw_o, mu_o, var_o, B, (int)N, (int)K, (int)D, alpha, kappa0, a0, b0,
        seed, step, chain0);
    return cudaGetLastError();
  }
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
