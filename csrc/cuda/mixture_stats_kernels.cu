// CUDA kernels of gmmkernels::mixture_stats / mixture_stats_backward. No torch header here: only the CUDA runtime
// and the shared per-(n,k) math (csrc/include/gmmkernels/mixture_stats.h); launchers declared in
// gmmkernels/mixture_stats_launch.h.
//
// Forward, small D (diag, D <= 32): one thread per row, the x row and the score accumulator in registers
//   (templated on a D bound), components staged through shared memory in tiles, one-pass online softmax with
//   rescaling; a second pass over the components writes the responsibilities when asked.
// Everything else: a "team" of TEAM threads (8, 32 or 128) per row, lanes owning coordinates d = lane + TEAM*i;
//   |y|^2 and G.s are team reductions (butterfly shuffles: every lane gets bitwise the same value). Forward:
//   pass 1 online log-sum-exp (max m, sum s), pass 2 r_k = exp(logit - m) / s and score accumulation in the
//   output row.
//   Full W: delta and y are shared through a per-team scratch (shared memory when it fits, else global workspace).
// Backward: the same teams; r_k = exp(logit_k - logp) / Z, Z = sum_j exp(logit_j - logp) (the saved logp is the
//   shift, the normalisation cancels its rounding error u |logp|); each team owns a contiguous range of rows and one partial slot [K][D + PD + 1] in the
//   workspace, updated by fixed lanes in row order (no atomics); a second kernel sums the slots in a fixed order.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "gmmkernels/mixture_stats.h"
#include "gmmkernels/mixture_stats_launch.h"

namespace gmmkernels {
namespace {

using namespace gmmkernels::mixture_stats;

__device__ __forceinline__ float dexp(float v) { return expf(v); }
__device__ __forceinline__ double dexp(double v) { return exp(v); }
__device__ __forceinline__ float dlog(float v) { return logf(v); }
__device__ __forceinline__ double dlog(double v) { return log(v); }

struct ExpOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T v) const {
    return dexp(v);
  }
};
struct LogOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T v) const {
    return dlog(v);
  }
};

constexpr int kBlock = 128;

// ------------------------------------------------------------------------------------------------ teams

template <int TEAM>
__device__ __forceinline__ void team_sync() {
  if (TEAM <= 32)
    __syncwarp();
  else
    __syncthreads();
}

// Sum over the TEAM lanes; every lane receives the same bits. red: kBlock/32 elements of shared memory.
template <int TEAM, typename T>
__device__ __forceinline__ T team_sum(T v, T* red) {
#pragma unroll
  for (int off = (TEAM < 32 ? TEAM : 32) / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if (TEAM > 32) {
    const int warp = threadIdx.x / 32;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[warp] = v;
    __syncthreads();
    T s = T(0);
#pragma unroll
    for (int w = 0; w < TEAM / 32; ++w) s += red[w];
    v = s;
  }
  return v;
}

// Launch geometry of the team kernels (pure function of the sizes).
struct Plan {
  int team;
  int tpb;           // teams per block
  int64_t slots;     // teams per batch entry that own rows
  int64_t rpt;       // rows per team
  int64_t bpb;       // blocks per batch entry
  int64_t scratch;   // scratch elements per team (full only)
  bool smem_scratch;
  size_t smem_bytes;
};

inline int pick_team(int64_t D) { return D <= 8 ? 8 : (D <= 64 ? 32 : 128); }

inline Plan make_plan(int64_t B, int64_t N, int64_t K, int64_t D, bool full, int elem, bool backward) {
  Plan p;
  p.team = pick_team(D);
  p.tpb = kBlock / p.team;
  const int64_t target_threads = int64_t(1) << 18;  // enough teams to fill a large GPU
  int64_t want = std::max<int64_t>(1, target_threads / p.team / std::max<int64_t>(B, 1));
  if (backward) {
    const int64_t per = K * (D + (full ? D * D : D) + 1);
    const int64_t cap = std::max<int64_t>(1, (int64_t(1) << 26) / std::max<int64_t>(1, B * per));
    want = std::min(want, cap);
  }
  want = std::max<int64_t>(1, std::min(want, N));
  p.rpt = (N + want - 1) / want;
  if (p.rpt < 1) p.rpt = 1;
  p.slots = (N + p.rpt - 1) / p.rpt;
  if (p.slots < 1) p.slots = 1;
  p.bpb = (p.slots + p.tpb - 1) / p.tpb;
  p.scratch = full ? 4 * D : 0;
  const size_t red = sizeof(double) * (kBlock / 32);
  const size_t sbytes = size_t(p.tpb) * size_t(p.scratch) * size_t(elem);
  p.smem_scratch = full && sbytes <= 40 * 1024;
  p.smem_bytes = red + (p.smem_scratch ? sbytes : 0);
  return p;
}

// ------------------------------------------------------------------------------------- forward: small D

constexpr int kTileK = 32;

template <typename T, int DMAX>
__global__ void __launch_bounds__(kBlock) fwd_diag_regs_kernel(const T* __restrict__ x, const T* __restrict__ means,
                                                               const T* __restrict__ prec, const T* __restrict__ logc,
                                                               T* __restrict__ logp, T* __restrict__ score,
                                                               T* __restrict__ resp, int64_t N, int64_t K, int D,
                                                               int64_t bpb) {
  __shared__ T s_mu[kTileK][DMAX];
  __shared__ T s_w[kTileK][DMAX];
  __shared__ T s_c[kTileK];
  const int64_t b = blockIdx.x / bpb;
  const int64_t n = (blockIdx.x % bpb) * kBlock + threadIdx.x;
  const bool active = n < N;
  const T* xr = x + (b * N + (active ? n : 0)) * D;
  const T* mub = means + b * K * D;
  const T* wb = prec + b * K * D;
  const T* cb = logc + b * K;
  T xv[DMAX], acc[DMAX];
#pragma unroll
  for (int d = 0; d < DMAX; ++d) {
    xv[d] = (d < D && active) ? xr[d] : T(0);
    acc[d] = T(0);
  }
  OnlineLSE<T> st;
  st.init();
  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
    const int kt = int(K - k0 < kTileK ? K - k0 : kTileK);
    __syncthreads();
    for (int e = threadIdx.x; e < kt * DMAX; e += kBlock) {
      const int kk = e / DMAX, d = e % DMAX;
      s_mu[kk][d] = d < D ? mub[(k0 + kk) * D + d] : T(0);
      s_w[kk][d] = d < D ? wb[(k0 + kk) * D + d] : T(0);
    }
    for (int e = threadIdx.x; e < kt; e += kBlock) s_c[e] = cb[k0 + e];
    __syncthreads();
    for (int kk = 0; kk < kt; ++kk) {
      T sq = T(0);
#pragma unroll
      for (int d = 0; d < DMAX; ++d) {
        const T y = diag_y(s_w[kk][d], xv[d], s_mu[kk][d]);
        sq += y * y;
      }
      T rescale;
      const T p = st.push(logit_of(s_c[kk], sq), rescale, ExpOp());
      if (score != nullptr) {
#pragma unroll
        for (int d = 0; d < DMAX; ++d) {
          const T w = s_w[kk][d];
          acc[d] = acc[d] * rescale + p * diag_s(w, diag_y(w, xv[d], s_mu[kk][d]));
        }
      }
    }
  }
  const T lp = st.lse(LogOp());
  if (active) {
    logp[b * N + n] = lp;
    if (score != nullptr) {
      const T inv = T(1) / st.s;
      T* sr = score + (b * N + n) * D;
#pragma unroll
      for (int d = 0; d < DMAX; ++d)
        if (d < D) sr[d] = acc[d] * inv;
    }
  }
  if (resp == nullptr) return;
  // second pass for the responsibilities (needs the final logp)
  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
    const int kt = int(K - k0 < kTileK ? K - k0 : kTileK);
    __syncthreads();
    for (int e = threadIdx.x; e < kt * DMAX; e += kBlock) {
      const int kk = e / DMAX, d = e % DMAX;
      s_mu[kk][d] = d < D ? mub[(k0 + kk) * D + d] : T(0);
      s_w[kk][d] = d < D ? wb[(k0 + kk) * D + d] : T(0);
    }
    for (int e = threadIdx.x; e < kt; e += kBlock) s_c[e] = cb[k0 + e];
    __syncthreads();
    for (int kk = 0; kk < kt; ++kk) {
      T sq = T(0);
#pragma unroll
      for (int d = 0; d < DMAX; ++d) {
        const T y = diag_y(s_w[kk][d], xv[d], s_mu[kk][d]);
        sq += y * y;
      }
      if (active) resp[(b * N + n) * K + k0 + kk] = st.prob(logit_of(s_c[kk], sq), ExpOp());
    }
  }
}

// ---------------------------------------------------------------------------------------- team helpers

// |W_k (x - mu_k)|^2 (team-reduced). FULL: delta -> sd, y -> sy (team scratch, all D entries valid on return).
template <typename T, int TEAM, bool FULL>
__device__ __forceinline__ T team_sq(const T* xr, const T* mu, const T* W, int64_t D, int lane, T* sd, T* sy, T* red) {
  T part = T(0);
  if (!FULL) {
    for (int64_t d = lane; d < D; d += TEAM) {
      const T y = diag_y(W[d], xr[d], mu[d]);
      part += y * y;
    }
  } else {
    team_sync<TEAM>();  // previous users of the scratch are done
    for (int64_t j = lane; j < D; j += TEAM) sd[j] = xr[j] - mu[j];
    team_sync<TEAM>();
    for (int64_t i = lane; i < D; i += TEAM) {
      const T* Wi = W + i * D;
      T a = T(0);
      for (int64_t j = 0; j <= i; ++j) a += Wi[j] * sd[j];
      sy[i] = a;
      part += a * a;
    }
    team_sync<TEAM>();
  }
  return team_sum<TEAM>(part, red);
}

// ------------------------------------------------------------------------------------- forward: teams

template <typename T, int TEAM, bool FULL>
__global__ void __launch_bounds__(kBlock) fwd_team_kernel(const T* __restrict__ x, const T* __restrict__ means,
                                                          const T* __restrict__ prec, const T* __restrict__ logc,
                                                          T* __restrict__ logp, T* __restrict__ score,
                                                          T* __restrict__ resp, int64_t N, int64_t K, int64_t D,
                                                          Plan plan, T* __restrict__ gscratch) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* red = reinterpret_cast<T*>(smem_raw);
  constexpr int TPB = kBlock / TEAM;
  const int64_t b = blockIdx.x / plan.bpb;
  const int tib = threadIdx.x / TEAM, lane = threadIdx.x % TEAM;
  const int64_t t = (blockIdx.x % plan.bpb) * TPB + tib;
  T* scr = nullptr;
  if (FULL) {
    scr = plan.smem_scratch ? reinterpret_cast<T*>(smem_raw + sizeof(double) * (kBlock / 32)) + tib * plan.scratch
                            : gscratch + (blockIdx.x * int64_t(TPB) + tib) * plan.scratch;
  }
  T* sd = scr;
  T* sy = FULL ? scr + D : nullptr;
  const int64_t PD = FULL ? D * D : D;
  const T* mub = means + b * K * D;
  const T* Wb = prec + b * K * PD;
  const T* cb = logc + b * K;
  for (int64_t it = 0; it < plan.rpt; ++it) {
    const int64_t n = t * plan.rpt + it;
    const bool active = n < N;
    const T* xr = x + (b * N + (active ? n : 0)) * D;
    OnlineLSE<T> st;
    st.init();
    for (int64_t k = 0; k < K; ++k) {
      const T sq = team_sq<T, TEAM, FULL>(xr, mub + k * D, Wb + k * PD, D, lane, sd, sy, red);
      T rescale;
      st.push(logit_of(cb[k], sq), rescale, ExpOp());
    }
    const T lp = st.lse(LogOp());
    if (active && lane == 0) logp[b * N + n] = lp;
    if (score == nullptr && resp == nullptr) continue;
    T* sr = score != nullptr ? score + (b * N + (active ? n : 0)) * D : nullptr;
    if (sr != nullptr && active)
      for (int64_t d = lane; d < D; d += TEAM) sr[d] = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T* mu = mub + k * D;
      const T* W = Wb + k * PD;
      const T sq = team_sq<T, TEAM, FULL>(xr, mu, W, D, lane, sd, sy, red);
      const T r = st.prob(logit_of(cb[k], sq), ExpOp());
      if (resp != nullptr && active && lane == 0) resp[(b * N + n) * K + k] = r;
      if (sr != nullptr && active) {
        if (!FULL) {
          for (int64_t d = lane; d < D; d += TEAM) {
            const T w = W[d];
            sr[d] += r * diag_s(w, diag_y(w, xr[d], mu[d]));
          }
        } else {
          // s_j = -sum_{i >= j} W_ij y_i
          for (int64_t j = lane; j < D; j += TEAM) {
            T a = T(0);
            for (int64_t i = j; i < D; ++i) a += W[i * D + j] * sy[i];
            sr[j] += r * (-a);
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------ backward: teams

template <typename T, int TEAM, bool FULL>
__global__ void __launch_bounds__(kBlock) bwd_team_kernel(const T* __restrict__ g, const T* __restrict__ G,
                                                          const T* __restrict__ H, const T* __restrict__ x,
                                                          const T* __restrict__ means, const T* __restrict__ prec,
                                                          const T* __restrict__ logc, const T* __restrict__ logp,
                                                          T* __restrict__ gx, T* __restrict__ part, int64_t N,
                                                          int64_t K, int64_t D, Plan plan, T* __restrict__ gscratch) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* red = reinterpret_cast<T*>(smem_raw);
  constexpr int TPB = kBlock / TEAM;
  const int64_t b = blockIdx.x / plan.bpb;
  const int tib = threadIdx.x / TEAM, lane = threadIdx.x % TEAM;
  const int64_t t = (blockIdx.x % plan.bpb) * TPB + tib;
  const int64_t PD = FULL ? D * D : D;
  const int64_t per = K * (D + PD + 1);
  T* slot = part + (b * plan.slots + (t < plan.slots ? t : 0)) * per;  // written only by teams with rows
  T* scr = nullptr;
  if (FULL) {
    scr = plan.smem_scratch ? reinterpret_cast<T*>(smem_raw + sizeof(double) * (kBlock / 32)) + tib * plan.scratch
                            : gscratch + (blockIdx.x * int64_t(TPB) + tib) * plan.scratch;
  }
  T* sd = scr;
  T* sy = FULL ? scr + D : nullptr;
  T* swg = FULL ? scr + 2 * D : nullptr;
  T* sgy = FULL ? scr + 3 * D : nullptr;
  const T* mub = means + b * K * D;
  const T* Wb = prec + b * K * PD;
  const T* cb = logc + b * K;
  for (int64_t it = 0; it < plan.rpt; ++it) {
    const int64_t n = t * plan.rpt + it;
    const bool active = n < N;
    const int64_t row = b * N + (active ? n : 0);
    const T* xr = x + row * D;
    const T* Gr = G != nullptr ? G + row * D : nullptr;
    const T* Hr = H != nullptr ? H + row * K : nullptr;
    const T lp = logp[row];
    const T gg = g[row];
    // (G.s_k) for component k: -(W G).y, team-reduced; FULL also leaves W G in swg
    auto g_dot_s = [&](const T* mu, const T* W) -> T {
      T part_ = T(0);
      if (Gr == nullptr) return T(0);
      if (!FULL) {
        for (int64_t d = lane; d < D; d += TEAM) {
          const T w = W[d];
          part_ += diag_s(w, diag_y(w, xr[d], mu[d])) * Gr[d];
        }
      } else {
        for (int64_t i = lane; i < D; i += TEAM) {
          const T* Wi = W + i * D;
          T a = T(0);
          for (int64_t j = 0; j <= i; ++j) a += Wi[j] * Gr[j];
          swg[i] = a;
          part_ -= a * sy[i];
        }
      }
      return team_sum<TEAM>(part_, red);
    };
    // pass 1: Z, sum_k r_k G.s_k and sum_k r_k H_k
    T zsum = T(0), gsum = T(0), hsum = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T* mu = mub + k * D;
      const T* W = Wb + k * PD;
      const T sq = team_sq<T, TEAM, FULL>(xr, mu, W, D, lane, sd, sy, red);
      const T p = dexp(logit_of(cb[k], sq) - lp);
      const T gs = g_dot_s(mu, W);
      zsum += p;
      gsum += p * gs;
      if (Hr != nullptr) hsum += p * Hr[k];
    }
    const T zinv = T(1) / zsum;
    gsum *= zinv;
    hsum *= zinv;
    // pass 2
    T* gxr = gx + row * D;
    if (active)
      for (int64_t d = lane; d < D; d += TEAM) gxr[d] = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T* mu = mub + k * D;
      const T* W = Wb + k * PD;
      const T sq = team_sq<T, TEAM, FULL>(xr, mu, W, D, lane, sd, sy, red);
      const T r = dexp(logit_of(cb[k], sq) - lp) * zinv;
      const T gs = g_dot_s(mu, W);
      const T a = dlogit(r, gg, Gr != nullptr ? gs - gsum : T(0), Hr != nullptr ? Hr[k] - hsum : T(0));
      T* smu = slot + k * D;
      T* sw = slot + K * D + k * PD;
      if (!FULL) {
        if (active) {
          for (int64_t d = lane; d < D; d += TEAM) {
            const T w = W[d], m = mu[d], xd = xr[d];
            const T Gd = Gr != nullptr ? Gr[d] : T(0);
            const T y = diag_y(w, xd, m);
            const T gy = grad_y(a, y, r, w * Gd);
            const T tt = w * gy;
            gxr[d] += tt;
            smu[d] -= tt;
            sw[d] += grad_w(gy, xd - m, r, y, Gd);
          }
        }
      } else {
        for (int64_t i = lane; i < D; i += TEAM) sgy[i] = grad_y(a, sy[i], r, Gr != nullptr ? swg[i] : T(0));
        team_sync<TEAM>();
        if (active) {
          for (int64_t j = lane; j < D; j += TEAM) {
            T s = T(0);
            for (int64_t i = j; i < D; ++i) s += W[i * D + j] * sgy[i];
            gxr[j] += s;
            smu[j] -= s;
          }
          for (int64_t i = lane; i < D; i += TEAM) {
            const T gyi = sgy[i], yi = sy[i];
            T* swi = sw + i * D;
            for (int64_t j = 0; j <= i; ++j) swi[j] += grad_w(gyi, sd[j], r, yi, Gr != nullptr ? Gr[j] : T(0));
          }
        }
      }
      if (active && lane == 0) slot[K * D + K * PD + k] += a;
    }
  }
}

// Sum of the partial slots in slot order: out element e of batch b.
template <typename T>
__global__ void __launch_bounds__(256) reduce_slots_kernel(const T* __restrict__ part, T* __restrict__ gmeans,
                                                          T* __restrict__ gprec, T* __restrict__ glogc, int64_t B,
                                                          int64_t slots, int64_t K, int64_t D, int64_t PD) {
  const int64_t per = K * (D + PD + 1);
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= B * per) return;
  const int64_t b = idx / per, e = idx % per;
  T s = T(0);
  for (int64_t j = 0; j < slots; ++j) s += part[(b * slots + j) * per + e];
  if (e < K * D)
    gmeans[b * K * D + e] = s;
  else if (e < K * D + K * PD)
    gprec[b * K * PD + (e - K * D)] = s;
  else
    glogc[b * K + (e - K * D - K * PD)] = s;
}

template <typename T, int TEAM, bool FULL>
cudaError_t launch_fwd_team(const T* x, const T* means, const T* prec, const T* logc, T* logp, T* score, T* resp,
                            int64_t B, int64_t N, int64_t K, int64_t D, const Plan& p, T* ws, cudaStream_t stream) {
  if (p.smem_bytes > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(fwd_team_kernel<T, TEAM, FULL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(p.smem_bytes));
    if (e != cudaSuccess) return e;
  }
  fwd_team_kernel<T, TEAM, FULL><<<dim3(unsigned(B * p.bpb)), kBlock, p.smem_bytes, stream>>>(
      x, means, prec, logc, logp, score, resp, N, K, D, p, ws);
  return cudaGetLastError();
}

template <typename T, int TEAM, bool FULL>
cudaError_t launch_bwd_team(const T* g, const T* G, const T* H, const T* x, const T* means, const T* prec,
                            const T* logc, const T* logp, T* gx, T* part, int64_t N, int64_t K, int64_t D, int64_t B,
                            const Plan& p, T* scratch, cudaStream_t stream) {
  bwd_team_kernel<T, TEAM, FULL><<<dim3(unsigned(B * p.bpb)), kBlock, p.smem_bytes, stream>>>(
      g, G, H, x, means, prec, logc, logp, gx, part, N, K, D, p, scratch);
  return cudaGetLastError();
}

template <typename T, bool FULL>
cudaError_t fwd_dispatch_team(const T* x, const T* means, const T* prec, const T* logc, T* logp, T* score, T* resp,
                              int64_t B, int64_t N, int64_t K, int64_t D, const Plan& p, T* ws, cudaStream_t s) {
  switch (p.team) {
    case 8:
      return launch_fwd_team<T, 8, FULL>(x, means, prec, logc, logp, score, resp, B, N, K, D, p, ws, s);
    case 32:
      return launch_fwd_team<T, 32, FULL>(x, means, prec, logc, logp, score, resp, B, N, K, D, p, ws, s);
    default:
      return launch_fwd_team<T, 128, FULL>(x, means, prec, logc, logp, score, resp, B, N, K, D, p, ws, s);
  }
}

template <typename T, int DMAX>
cudaError_t launch_fwd_regs(const T* x, const T* means, const T* prec, const T* logc, T* logp, T* score, T* resp,
                            int64_t B, int64_t N, int64_t K, int64_t D, cudaStream_t stream) {
  const int64_t bpb = (N + kBlock - 1) / kBlock;
  fwd_diag_regs_kernel<T, DMAX><<<dim3(unsigned(B * bpb)), kBlock, 0, stream>>>(x, means, prec, logc, logp, score,
                                                                                 resp, N, K, int(D), bpb);
  return cudaGetLastError();
}

}  // namespace
}  // namespace gmmkernels

// The launchers of mixture_stats_launch.h (qualified names: see GMMK_INSTANTIATE_LAUNCHER in gmmkernels/common.h).
int64_t gmmkernels::mixture_stats_forward_workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full,
                                                    int elem_size) {
  if (!full || B == 0 || N == 0) return 0;
  const Plan p = make_plan(B, N, K, D, full, elem_size, false);
  return p.smem_scratch ? 0 : B * p.bpb * p.tpb * p.scratch;
}

int64_t gmmkernels::mixture_stats_backward_workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full,
                                                     int elem_size) {
  if (B == 0 || N == 0) return 0;
  const Plan p = make_plan(B, N, K, D, full, elem_size, true);
  const int64_t per = K * (D + (full ? D * D : D) + 1);
  const int64_t scratch = (full && !p.smem_scratch) ? B * p.bpb * p.tpb * p.scratch : 0;
  return B * p.slots * per + scratch;
}

template <typename T>
cudaError_t gmmkernels::launch_mixture_stats_forward(const T* x, const T* means, const T* prec, const T* logc, T* logp,
                                                     T* score, T* resp, int64_t B, int64_t N, int64_t K, int64_t D,
                                                     bool full, T* workspace, cudaStream_t stream) {
  if (B == 0 || N == 0) return cudaSuccess;
  if (!full && D <= 32) {
    if (D <= 4) return launch_fwd_regs<T, 4>(x, means, prec, logc, logp, score, resp, B, N, K, D, stream);
    if (D <= 8) return launch_fwd_regs<T, 8>(x, means, prec, logc, logp, score, resp, B, N, K, D, stream);
    if (D <= 16) return launch_fwd_regs<T, 16>(x, means, prec, logc, logp, score, resp, B, N, K, D, stream);
    return launch_fwd_regs<T, 32>(x, means, prec, logc, logp, score, resp, B, N, K, D, stream);
  }
  const Plan p = make_plan(B, N, K, D, full, int(sizeof(T)), false);
  if (full) return fwd_dispatch_team<T, true>(x, means, prec, logc, logp, score, resp, B, N, K, D, p, workspace, stream);
  return fwd_dispatch_team<T, false>(x, means, prec, logc, logp, score, resp, B, N, K, D, p, workspace, stream);
}

template <typename T>
cudaError_t gmmkernels::launch_mixture_stats_backward(const T* g, const T* G, const T* H, const T* x, const T* means,
                                                      const T* prec, const T* logc, const T* logp, T* gx, T* gmeans,
                                                      T* gprec, T* glogc, int64_t B, int64_t N, int64_t K, int64_t D,
                                                      bool full, T* workspace, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  const int64_t PD = full ? D * D : D;
  const int64_t per = K * (D + PD + 1);
  if (N == 0) {  // no rows: every parameter gradient is zero
    cudaError_t e = cudaMemsetAsync(gmeans, 0, sizeof(T) * B * K * D, stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(gprec, 0, sizeof(T) * B * K * PD, stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(glogc, 0, sizeof(T) * B * K, stream);
    return e;
  }
  const Plan p = make_plan(B, N, K, D, full, int(sizeof(T)), true);
  T* part = workspace;
  T* scratch = workspace + B * p.slots * per;
  cudaError_t e;
#define GMM_BWD(TEAM_, FULL_) \
  launch_bwd_team<T, TEAM_, FULL_>(g, G, H, x, means, prec, logc, logp, gx, part, N, K, D, B, p, scratch, stream)
  if (full) {
    if (p.smem_bytes > 48 * 1024) return cudaErrorInvalidConfiguration;
    e = p.team == 8 ? GMM_BWD(8, true) : (p.team == 32 ? GMM_BWD(32, true) : GMM_BWD(128, true));
  } else {
    e = p.team == 8 ? GMM_BWD(8, false) : (p.team == 32 ? GMM_BWD(32, false) : GMM_BWD(128, false));
  }
#undef GMM_BWD
  if (e != cudaSuccess) return e;
  const int64_t total = B * per;
  reduce_slots_kernel<T><<<dim3(unsigned((total + 255) / 256)), 256, 0, stream>>>(part, gmeans, gprec, glogc, B,
                                                                                   p.slots, K, D, PD);
  return cudaGetLastError();
}

GMMK_INSTANTIATE_LAUNCHER(launch_mixture_stats_forward)
GMMK_INSTANTIATE_LAUNCHER(launch_mixture_stats_backward)
