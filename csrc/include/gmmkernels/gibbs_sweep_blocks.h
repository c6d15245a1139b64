// The CUDA kernels of gibbs_sweep as block programs (gmmkernels/block_program.h): launched on a GPU by
// csrc/cuda/gibbs_sweep_kernels.cu and run on CPU threads by csrc/simt/gibbs_sweep.cpp, which the tests compare with
// the CPU kernel. Two layouts of the same sweep:
//  - GibbsWarpChains (small chains, the common case of many chains): one warp per chain, kWarps chains per block, the
//    chain's constants and statistics in the warp's slice of shared memory, only warp-level synchronisation;
//  - GibbsBlockChain (chains whose per-chain state does not fit a warp's slice): one block per chain.
// Phases of both: (1) per-component constants; (2) one thread per point draws z_n (one Philox uniform, two passes over
// K, nothing of size N x K stored); (3) sufficient statistics with a fixed split of the points and a fixed-order
// combine (deterministic, no atomics); (4) conjugate draws (Dirichlet via gamma, Normal-Inverse-Gamma per (k, d)).
// Shared maths and random streams: gmmkernels/gibbs_sweep.h (so the draws equal the CPU kernel's up to the rounding
// of the statistics' sums).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "gmmkernels/block_program.h"
#include "gmmkernels/gibbs_sweep.h"

namespace gmmkernels {
namespace gibbs_sweep {

// The phases both layouts share, spread over threads t, t + nt, ... of the chain's group (a block or a warp); the
// caller synchronises the group between them.
// (1a) ivar = 1 / var of chain b.
template <typename T, typename Acc>
GMMK_DEV void chain_ivar(int t, int nt, const T* var_b, int K, int D, Acc* ivar) {
  for (int e = t; e < K * D; e += nt) ivar[e] = Acc(1) / static_cast<Acc>(var_b[e]);
}
// (1b) logc_k = log w_k + 1/2 sum_d log ivar_kd.
template <typename T, typename Acc>
GMMK_DEV void chain_logc(int t, int nt, const T* logw_b, const Acc* ivar, int K, int D, Acc* logc) {
  for (int k = t; k < K; k += nt) {
    Acc ld = 0;
    for (int d = 0; d < D; ++d) ld -= log(ivar[k * D + d]);
    logc[k] = static_cast<Acc>(logw_b[k]) - Acc(0.5) * ld;
  }
}
// (2) z_n for the points n = t, t + nt, ...
template <typename T, typename Acc>
GMMK_DEV void chain_assignments(int t, int nt, const T* xb, const T* mub, const Acc* logc, const Acc* ivar, int N,
                                int K, int D, uint64_t seed, uint64_t gb, uint32_t step, int32_t* zb) {
  for (int n = t; n < N; n += nt) {
    rng::Stream s(seed, gb * N + n, step, kTagAssign);
    zb[n] = draw_assignment<T, Acc>(xb + (int64_t)n * D, D, K, logc, mub, ivar, s.uniform());
  }
}
// (3) the sums of statistics item (k, d) over the points n = lo, lo + step, ... < hi: (count, -) for d = D, else
// (sum x_d, sum x_d^2), over the points assigned to k.
template <typename T, typename Acc>
GMMK_DEV void item_sums(int lo, int hi, int step_n, const int32_t* zb, const T* xb, int k, int d, int D, Acc* q1,
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
GMMK_DEV void chain_gammas(int t, int nt, const Acc* st1, int K, int D, double alpha, uint64_t seed, uint64_t gb,
                           uint32_t step, double* g) {
  for (int k = t; k < K; k += nt) {
    rng::Stream s(seed, gb * K + k, step, kTagWeight);
    g[k] = s.gamma(alpha + static_cast<double>(st1[k * (D + 1) + D]));
  }
}
// (4b) log w = log g - log sum g (each thread sums the K gammas in order: every thread gets the same total), and the
// Normal-Inverse-Gamma draws of (mu, var) per (k, d).
template <typename T, typename Acc>
GMMK_DEV void chain_draws(int t, int nt, const double* g, const Acc* st1, const Acc* st2, const T* m0, int K, int D,
                          double kappa0, double a0, double b0, uint64_t seed, uint64_t gb, uint32_t step, T* logw_ob,
                          T* mu_ob, T* var_ob) {
  double gs = 0;
  for (int k = 0; k < K; ++k) gs += g[k];
  const double lgs = log(gs);
  for (int k = t; k < K; k += nt) logw_ob[k] = static_cast<T>(log(g[k]) - lgs);
  for (int e = t; e < K * D; e += nt) {
    const int k = e / D, d = e % D;
    rng::Stream s(seed, gb * K * D + e, step, kTagParam);
    double mm, vv;
    draw_param(static_cast<double>(st1[k * (D + 1) + D]), static_cast<double>(st1[k * (D + 1) + d]),
               static_cast<double>(st2[k * (D + 1) + d]), static_cast<double>(m0[d]), kappa0, a0, b0, s, &mm, &vv);
    mu_ob[e] = static_cast<T>(mm);
    var_ob[e] = static_cast<T>(vv);
  }
}

// Arguments of both layouts (chain b of the call draws the random streams of chain chain0 + b).
template <typename T>
struct SweepParams {
  const T* x;
  int64_t x_bstride;
  const T* logw;
  const T* mu;
  const T* var;
  const T* m0;
  int32_t* z;
  T* logw_o;
  T* mu_o;
  T* var_o;
  int64_t B;
  int N, K, D;
  double alpha, kappa0, a0, b0;
  uint64_t seed;
  uint32_t step;
  uint64_t chain0;
};

// One block per chain: grid (B).
template <typename T, typename Acc>
struct GibbsBlockChain {
  static constexpr int kThreads = 128;
  using Params = SweepParams<T>;
  // logc [K], ivar [K*D], st1 / st2 [K*(D+1)], p1 / p2 [kThreads] (Acc), then g [K] (double, 8-byte aligned)
  static size_t acc_bytes(int64_t K, int64_t D) {
    return (sizeof(Acc) * (size_t)(K + K * D + 2 * K * (D + 1) + 2 * kThreads) + 7) & ~size_t(7);
  }
  static size_t smem_bytes(const Params& p) { return acc_bytes(p.K, p.D) + sizeof(double) * (size_t)p.K; }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char* smem, const Params& p) {
    const int N = p.N, K = p.K, D = p.D;
    Acc* logc = reinterpret_cast<Acc*>(smem);  // K
    Acc* ivar = logc + K;                      // K*D
    Acc* st1 = ivar + K * D;                   // K*(D+1): sum x (d < D) or count (d == D)
    Acc* st2 = st1 + K * (D + 1);              // K*(D+1): sum x^2
    Acc* p1 = st2 + K * (D + 1);               // kThreads
    Acc* p2 = p1 + kThreads;                   // kThreads
    const size_t goff = (sizeof(Acc) * (size_t)(K + K * D + 2 * K * (D + 1) + 2 * kThreads) + 7) & ~size_t(7);
    double* g = reinterpret_cast<double*>(smem + goff);  // K
    const int64_t b = blk.block().x;
    const uint64_t gb = p.chain0 + static_cast<uint64_t>(b);  // the chain's index in the whole run
    const int tid = blk.tid(), nt = kThreads;
    const T* mub = p.mu + b * K * D;
    const T* xb = p.x + b * p.x_bstride;
    int32_t* zb = p.z + b * N;

    chain_ivar<T, Acc>(tid, nt, p.var + b * K * D, K, D, ivar);
    blk.sync();
    chain_logc<T, Acc>(tid, nt, p.logw + b * K, ivar, K, D, logc);
    blk.sync();
    chain_assignments<T, Acc>(tid, nt, xb, mub, logc, ivar, N, K, D, p.seed, gb, p.step, zb);
    blk.sync();  // z (global) visible to the block

    const int items = K * (D + 1);
    for (int base = 0; base < items; base += nt) {
      const int ni = imin(nt, items - base);
      const int nseg = nt / ni;
      const int item = base + tid % ni, seg = tid / ni;
      Acc q1 = 0, q2 = 0;
      if (seg < nseg) {
        const int k = item / (D + 1), d = item % (D + 1);
        const int lo = (int)((int64_t)N * seg / nseg), hi = (int)((int64_t)N * (seg + 1) / nseg);
        item_sums<T, Acc>(lo, hi, 1, zb, xb, k, d, D, &q1, &q2);
      }
      p1[tid] = q1;
      p2[tid] = q2;
      blk.sync();
      if (tid < ni) {
        Acc s1 = 0, s2 = 0;
        for (int sg = 0; sg < nseg; ++sg) {
          s1 += p1[sg * ni + tid];
          s2 += p2[sg * ni + tid];
        }
        st1[base + tid] = s1;
        st2[base + tid] = s2;
      }
      blk.sync();
    }

    chain_gammas<Acc>(tid, nt, st1, K, D, p.alpha, p.seed, gb, p.step, g);
    blk.sync();
    chain_draws<T, Acc>(tid, nt, g, st1, st2, p.m0, K, D, p.kappa0, p.a0, p.b0, p.seed, gb, p.step, p.logw_o + b * K,
                        p.mu_o + b * K * D, p.var_o + b * K * D);
  }
};

constexpr int kWarps = 8;                 // chains (warps) per block of the warp layout
constexpr size_t kWarpSliceBytes = 4096;  // per-chain state that selects the warp layout, at most

// Shared-memory slice of one chain in the warp layout: logc [K], ivar [K*D], st1 / st2 [K*(D+1)] (Acc), then g [K]
// (double, 8-byte aligned).
template <typename Acc>
GMMK_HD size_t warp_slice_acc_bytes(int64_t K, int64_t D) {
  return (sizeof(Acc) * (size_t)(K + K * D + 2 * K * (D + 1)) + 7) & ~size_t(7);
}
template <typename Acc>
GMMK_HD size_t warp_slice_bytes(int64_t K, int64_t D) {
  return warp_slice_acc_bytes<Acc>(K, D) + sizeof(double) * (size_t)K;
}

// One warp per chain, kWarps chains per block: grid (ceil(B / kWarps)).
template <typename T, typename Acc>
struct GibbsWarpChains {
  static constexpr int kThreads = kWarps * 32;
  using Params = SweepParams<T>;
  static size_t smem_bytes(const Params& p) { return kWarps * warp_slice_bytes<Acc>(p.K, p.D); }

  template <class Blk>
  static GMMK_DEV void run(const Blk& blk, unsigned char* smem, const Params& p) {
    const int N = p.N, K = p.K, D = p.D;
    const int warp = blk.tid() / 32, lane = blk.tid() % 32;
    const int64_t b = (int64_t)blk.block().x * kWarps + warp;
    if (b >= p.B) return;  // whole warps only: the program synchronises within a warp, never across the block
    unsigned char* slice = smem + (size_t)warp * warp_slice_bytes<Acc>(K, D);
    Acc* logc = reinterpret_cast<Acc*>(slice);  // K
    Acc* ivar = logc + K;                       // K*D
    Acc* st1 = ivar + K * D;                    // K*(D+1): sum x (d < D) or count (d == D)
    Acc* st2 = st1 + K * (D + 1);               // K*(D+1): sum x^2
    double* g = reinterpret_cast<double*>(slice + warp_slice_acc_bytes<Acc>(K, D));  // K
    const uint64_t gb = p.chain0 + static_cast<uint64_t>(b);
    const T* mub = p.mu + b * K * D;
    const T* xb = p.x + b * p.x_bstride;
    int32_t* zb = p.z + b * N;

    chain_ivar<T, Acc>(lane, 32, p.var + b * K * D, K, D, ivar);
    blk.sync_warp();
    chain_logc<T, Acc>(lane, 32, p.logw + b * K, ivar, K, D, logc);
    blk.sync_warp();
    chain_assignments<T, Acc>(lane, 32, xb, mub, logc, ivar, N, K, D, p.seed, gb, p.step, zb);
    blk.sync_warp();  // the lanes' z (global) visible to the warp

    // statistics: lane l sums its points l, l + 32, ... in order; the 32 partial sums are combined by a butterfly
    for (int item = 0; item < K * (D + 1); ++item) {
      const int k = item / (D + 1), d = item % (D + 1);
      Acc q1, q2;
      item_sums<T, Acc>(lane, N, 32, zb, xb, k, d, D, &q1, &q2);
      q1 = blk.warp_sum(q1);
      q2 = blk.warp_sum(q2);
      if (lane == 0) {
        st1[item] = q1;
        st2[item] = q2;
      }
    }
    blk.sync_warp();

    chain_gammas<Acc>(lane, 32, st1, K, D, p.alpha, p.seed, gb, p.step, g);
    blk.sync_warp();
    chain_draws<T, Acc>(lane, 32, g, st1, st2, p.m0, K, D, p.kappa0, p.a0, p.b0, p.seed, gb, p.step,
                        p.logw_o + b * K, p.mu_o + b * K * D, p.var_o + b * K * D);
  }
};

// The whole sweep on a launcher L (CudaLaunch or HostLaunch); arguments as launch_gibbs_sweep in
// gmmkernels/gibbs_sweep_launch.h. float chains accumulate in float (sums over one chain's points), double in double.
template <class L, typename T>
typename L::Error run_gibbs_sweep(const L& launch, const SweepParams<T>& p) {
  using Acc = T;
  if (p.B == 0) return L::kOk;
  if (warp_slice_bytes<Acc>(p.K, p.D) <= kWarpSliceBytes)  // many small chains: a warp each
    return launch.template run<GibbsWarpChains<T, Acc>>(Idx3{(unsigned)ceil_div(p.B, kWarps), 1, 1}, p);
  return launch.template run<GibbsBlockChain<T, Acc>>(Idx3{(unsigned)p.B, 1, 1}, p);
}

}  // namespace gibbs_sweep
}  // namespace gmmkernels
