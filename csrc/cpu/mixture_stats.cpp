// CPU kernels of gmmkernels::mixture_stats and gmmkernels::mixture_stats_backward.
//
// Layout of the work: rows (points) are processed in blocks of R (the lanes of one vector, cpu_vec.h: 16 floats /
// 8 doubles with AVX-512) held transposed in scratch ([D][R]), so every inner loop runs over the R rows of a block
// with the component's parameters broadcast: no horizontal reductions, and gcc vectorises the loops. Components are
// visited one at a time per block (each component's parameters are reused across the R rows).
//   forward:  pass 1 computes the K logits of the block, a stable max-shifted log-sum-exp gives logp and r;
//             pass 2 recomputes y_k = W_k (x - mu_k) by direct difference and accumulates score = sum_k r_k s_k.
//   backward: pass 1 recomputes the logits, then r = exp(logit - m) / sum_j exp(logit_j - m) with m the row's
//             largest logit (as the forward; not the saved logp, see backward_impl) and the row sums G.S and
//             sum_j r_j H_j;
//             pass 2 forms a_k and gy_k, accumulates grad_x per row and the parameter gradients in per-chunk
//             partial buffers; a final fixed-order sum over chunks makes the result independent of the threads.
#include <ATen/Parallel.h>
#include <torch/all.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cpu_vec.h"
#include "gmmkernels/mixture_stats.h"
#include "gmmkernels/mixture_stats_checks.h"

namespace gmmkernels {
namespace {

using namespace gmmkernels::mixture_stats;
using cpu::splat;
using cpu::vexp;
using cpu::VecOf;

template <typename T>
struct Problem {
  const T* x;      // [B,N,D]
  const T* means;  // [B,K,D]
  const T* prec;   // [B,K,D] or [B,K,D,D]
  const T* logc;   // [B,K]
  int64_t B, N, K, D;
  bool full;
  int64_t pd() const { return full ? D * D : D; }
};

// Rows [n0, n0+nr) of a [N, D] matrix, transposed into D vectors of R lanes (missing rows are zero).
template <typename T, typename V>
inline void load_rows_t(const T* src, int64_t D, int64_t n0, int64_t nr, V* dst) {
  constexpr int R = sizeof(V) / sizeof(T);
  for (int64_t d = 0; d < D; ++d) dst[d] = V{};
  for (int64_t r = 0; r < nr; ++r) {
    const T* row = src + (n0 + r) * D;
    for (int64_t d = 0; d < D; ++d) dst[d][r] = row[d];
  }
  (void)R;
}

template <typename T, typename V>
inline void store_rows_t(const V* src, int64_t D, int64_t n0, int64_t nr, T* dst) {
  for (int64_t r = 0; r < nr; ++r) {
    T* row = dst + (n0 + r) * D;
    for (int64_t d = 0; d < D; ++d) row[d] = src[d][r];
  }
}

// Sum of the R lanes in a fixed pairwise order.
template <typename T, typename V>
inline T lane_sum(const V& v) {
  constexpr int R = sizeof(V) / sizeof(T);
  T t[R];
  for (int r = 0; r < R; ++r) t[r] = v[r];
  for (int h = R / 2; h >= 1; h /= 2)
    for (int r = 0; r < h; ++r) t[r] += t[r + h];
  return t[0];
}

// w2 = w * w ([B,K,D]), precomputed once per call: the score term r_k w^2 (mu - x) then takes one multiply, one subtract
// and one fused multiply-add per (k, d), by direct difference as before. (y = w x - w mu as one fused multiply-add
// would save one more operation in the log-density pass, but its error eps |w mu| |y| reaches 1e-2 in log p at
// |mu| / sigma = 1e5 in float32, so that pass keeps y = w (x - mu).)
template <typename T>
void diag_squares(const T* w, int64_t n, T* w2) {
  at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) w2[i] = w[i] * w[i];
  });
}

// |W_k (x - mu_k)|^2 for KB consecutive diagonal components at once (x loaded once per d, KB independent chains).
template <typename T, typename V, int KB>
inline void diag_sq_multi(const V* __restrict xt, const T* __restrict mu, const T* __restrict w, int64_t D, V* out) {
  V acc[KB];
  for (int j = 0; j < KB; ++j) acc[j] = V{};
  for (int64_t d = 0; d < D; ++d) {
    const V x = xt[d];
    for (int j = 0; j < KB; ++j) {
      const V y = diag_y(splat<V>(w[j * D + d]), x, splat<V>(mu[j * D + d]));
      acc[j] += y * y;
    }
  }
  for (int j = 0; j < KB; ++j) out[j] = acc[j];
}

// acc[d] += sum_j p[j] * s_j[d] for KB consecutive diagonal components, s_j = w_j^2 (mu_j - x).
template <typename T, typename V, int KB>
inline void diag_score_multi(const V* __restrict xt, const T* __restrict mu, const T* __restrict w2, int64_t D,
                             const V* __restrict p, V* __restrict acc) {
  V pk[KB];
  for (int j = 0; j < KB; ++j) pk[j] = p[j];
  for (int64_t d = 0; d < D; ++d) {
    const V x = xt[d];
    V a = acc[d];
    for (int j = 0; j < KB; ++j) a += (pk[j] * splat<V>(w2[j * D + d])) * (splat<V>(mu[j * D + d]) - x);
    acc[d] = a;
  }
}

// Full W: delta = x - mu, y = W delta (lower triangle); returns |y|^2.
template <typename T, typename V>
inline V full_project_t(const V* __restrict xt, const T* __restrict mu, const T* __restrict W, int64_t D,
                        V* __restrict delta, V* __restrict y) {
  for (int64_t j = 0; j < D; ++j) delta[j] = xt[j] - mu[j];
  V sq = V{};
  for (int64_t i = 0; i < D; ++i) {
    const T* Wi = W + i * D;
    V a0 = V{}, a1 = V{};
    int64_t j = 0;
    for (; j + 1 <= i; j += 2) {
      a0 += Wi[j] * delta[j];
      a1 += Wi[j + 1] * delta[j + 1];
    }
    if (j <= i) a0 += Wi[j] * delta[j];
    const V v = a0 + a1;
    y[i] = v;
    sq += v * v;
  }
  return sq;
}

// out = W v (lower triangle).
template <typename T, typename V>
inline void full_matvec_t(const T* __restrict W, int64_t D, const V* __restrict v, V* __restrict out) {
  for (int64_t i = 0; i < D; ++i) {
    const T* Wi = W + i * D;
    V a = V{};
    for (int64_t j = 0; j <= i; ++j) a += Wi[j] * v[j];
    out[i] = a;
  }
}

// out += W^T (alpha * v) (lower triangle).
template <typename T, typename V>
inline void full_tmatvec_acc_t(const T* __restrict W, int64_t D, const V* __restrict v, V alpha, V* __restrict out) {
  for (int64_t i = 0; i < D; ++i) {
    const T* Wi = W + i * D;
    const V vi = alpha * v[i];
    for (int64_t j = 0; j <= i; ++j) out[j] += Wi[j] * vi;
  }
}

// ------------------------------------------------------------------------------------------------ forward

template <typename T, bool FULL>
void forward_impl(const Problem<T>& P, T* logp, T* score, T* resp) {
  typedef typename VecOf<T>::V V;
  constexpr int R = sizeof(V) / sizeof(T);
  constexpr int KB = 4;
  const int64_t B = P.B, N = P.N, K = P.K, D = P.D, PD = P.pd();
  const int64_t nblk = (N + R - 1) / R;
  if (B == 0 || nblk == 0) return;
  const int64_t work_per_blk = std::max<int64_t>(1, R * K * (FULL ? D * D : D));
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / work_per_blk);
  std::vector<T> w2(FULL ? 0 : B * K * D);
  if (!FULL) diag_squares<T>(P.prec, B * K * D, w2.data());
  at::parallel_for(0, B * nblk, grain, [&](int64_t begin, int64_t end) {
    std::vector<V> xt(D), acc(D), L(K), dbuf(FULL ? D : 0), ybuf(FULL ? D : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nblk, n0 = (task % nblk) * R;
      const int64_t nr = std::min<int64_t>(R, N - n0);
      const T* mub = P.means + b * K * D;
      const T* Wb = P.prec + b * K * PD;
      const T* cb = P.logc + b * K;
      load_rows_t<T, V>(P.x + b * N * D, D, n0, nr, xt.data());
      // pass 1: logits
      if (!FULL) {
        int64_t k = 0;
        for (; k + KB <= K; k += KB) diag_sq_multi<T, V, KB>(xt.data(), mub + k * D, Wb + k * D, D, L.data() + k);
        for (; k < K; ++k) diag_sq_multi<T, V, 1>(xt.data(), mub + k * D, Wb + k * D, D, L.data() + k);
      } else {
        for (int64_t k = 0; k < K; ++k)
          L[k] = full_project_t<T, V>(xt.data(), mub + k * D, Wb + k * D * D, D, dbuf.data(), ybuf.data());
      }
      for (int64_t k = 0; k < K; ++k) L[k] = logit_of(splat<V>(cb[k]), L[k]);
      // stable log-sum-exp and responsibilities
      V mx = splat<V>(neg_inf<T>());
      for (int64_t k = 0; k < K; ++k) mx = L[k] > mx ? L[k] : mx;
      // all -inf: shift by 0, sum = 0, logp = -inf and r = NaN (as torch.logsumexp / softmax)
      mx = mx == splat<V>(neg_inf<T>()) ? V{} : mx;
      V sum = V{};
      for (int64_t k = 0; k < K; ++k) {
        L[k] = vexp(L[k] - mx);
        sum += L[k];
      }
      V lp;
      for (int r = 0; r < R; ++r) lp[r] = std::log(sum[r]);
      lp += mx;
      const V inv = T(1) / sum;
      for (int64_t k = 0; k < K; ++k) L[k] *= inv;
      for (int64_t r = 0; r < nr; ++r) logp[b * N + n0 + r] = lp[r];
      if (resp != nullptr) {
        T* rb = resp + (b * N + n0) * K;
        for (int64_t r = 0; r < nr; ++r)
          for (int64_t k = 0; k < K; ++k) rb[r * K + k] = L[k][r];
      }
      if (score == nullptr) continue;
      // pass 2: score = sum_k r_k s_k, s_k recomputed by direct difference
      for (int64_t d = 0; d < D; ++d) acc[d] = V{};
      if (!FULL) {
        int64_t k = 0;
        const T* w2b = w2.data() + b * K * D;
        for (; k + KB <= K; k += KB)
          diag_score_multi<T, V, KB>(xt.data(), mub + k * D, w2b + k * D, D, L.data() + k, acc.data());
        for (; k < K; ++k) diag_score_multi<T, V, 1>(xt.data(), mub + k * D, w2b + k * D, D, L.data() + k, acc.data());
      } else {
        for (int64_t k = 0; k < K; ++k) {
          const T* W = Wb + k * D * D;
          full_project_t<T, V>(xt.data(), mub + k * D, W, D, dbuf.data(), ybuf.data());
          full_tmatvec_acc_t<T, V>(W, D, ybuf.data(), -L[k], acc.data());
        }
      }
      store_rows_t<T, V>(acc.data(), D, n0, nr, score + b * N * D);
    }
  });
}

// ----------------------------------------------------------------------------------------------- backward

template <typename T>
struct Grads {
  const T* g;     // [B,N]
  const T* G;     // [B,N,D] or null
  const T* H;     // [B,N,K] or null
  const T* logp;  // [B,N] (checked; the CPU backward recomputes the shift, the CUDA one uses it)
  T* gx;          // [B,N,D]
};

// Rows per chunk of the parameter-gradient reduction: depends on the sizes only (not on the thread count), so the
// fixed-order sum over chunks gives the same bits whatever the parallelism.
inline int64_t chunk_rows(int64_t N, int64_t B, int64_t per_chunk_elems, int R) {
  int64_t ch = std::max<int64_t>(int64_t(R) * 8, (N + 63) / 64);
  ch = (ch + R - 1) / R * R;
  const int64_t cap = int64_t(1) << 24;  // partial-buffer elements
  while (B * ((N + ch - 1) / ch) * per_chunk_elems > cap && ch < N) ch *= 2;
  return ch;
}

template <typename T, bool FULL>
void backward_impl(const Problem<T>& P, const Grads<T>& Gr, T* gmeans, T* gprec, T* glogc) {
  typedef typename VecOf<T>::V V;
  constexpr int R = sizeof(V) / sizeof(T);
  const int64_t B = P.B, N = P.N, K = P.K, D = P.D, PD = P.pd();
  const int64_t per = K * (D + PD + 1);  // partial layout per (b, chunk): gmu [K][D], gW [K][PD], gc [K]
  const int64_t CH = chunk_rows(N, B, per, R);
  const int64_t nch = N > 0 ? (N + CH - 1) / CH : 0;
  std::vector<T> part(static_cast<size_t>(B * nch * per), T(0));
  const bool hasG = Gr.G != nullptr, hasH = Gr.H != nullptr;

  if (B * nch > 0) {
    at::parallel_for(0, B * nch, 1, [&](int64_t begin, int64_t end) {
      std::vector<V> xt(D), Gt(hasG ? D : 0), gxt(D), dbuf(D), ybuf(D), wg(FULL ? D : 0), gyt(FULL ? D : 0),
          Pk(K), A(K), GS(hasG ? K : 0), Hk(hasH ? K : 0);
      // lane accumulators over the rows of one chunk: gmu [K][D], gW (diag) [K][D], gc [K]
      std::vector<V> lmu(K * D), lw(FULL ? 0 : K * D), lc(K);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / nch, c0 = (task % nch) * CH, c1 = std::min<int64_t>(N, c0 + CH);
        const T* mub = P.means + b * K * D;
        const T* Wb = P.prec + b * K * PD;
        const T* cb = P.logc + b * K;
        T* pb = part.data() + task * per;
        std::fill(lmu.begin(), lmu.end(), V{});
        std::fill(lw.begin(), lw.end(), V{});
        std::fill(lc.begin(), lc.end(), V{});
        for (int64_t n0 = c0; n0 < c1; n0 += R) {
          const int64_t nr = std::min<int64_t>(R, c1 - n0);
          load_rows_t<T, V>(P.x + b * N * D, D, n0, nr, xt.data());
          if (hasG) load_rows_t<T, V>(Gr.G + b * N * D, D, n0, nr, Gt.data());
          // padded lanes: g = 0, logp = 0, and r forced to 0 below, so they contribute nothing
          V gr = V{}, live = V{};
          for (int64_t r = 0; r < nr; ++r) {
            gr[r] = Gr.g[b * N + n0 + r];
            live[r] = T(1);
          }
          if (hasH)
            for (int64_t k = 0; k < K; ++k) {
              V h = V{};
              for (int64_t r = 0; r < nr; ++r) h[r] = Gr.H[(b * N + n0 + r) * K + k];
              Hk[k] = h;
            }
          // pass 1: the logits and G.s_k; then r_k = exp(logit_k - m) / Z with m the row's largest logit (as the
          // forward's softmax), and the row sums G.S and sum_j r_j H_j. With the maximum as the shift, a component
          // that holds the whole row gets exp(0) = 1 exactly and Z = 1, so G.s_k - G.S and H_k - sum_j r_j H_j are
          // exactly 0 for it: shifted by the saved logp instead, r_k came out of p / Z within an ulp of 1 and left
          // an ulp of G.s_k (up to |W|^2 |x - mu| |G|) in a_k, which the far rows of a component multiply by |y|.
          V mx = splat<V>(neg_inf<T>());
          for (int64_t k = 0; k < K; ++k) {
            const T* mu = mub + k * D;
            const T* W = Wb + k * PD;
            V sq = V{}, gs = V{};
            if (!FULL) {
              for (int64_t d = 0; d < D; ++d) {
                const V wv = splat<V>(W[d]);
                const V y = diag_y(wv, xt[d], splat<V>(mu[d]));
                sq += y * y;
                if (hasG) gs += diag_s(wv, y) * Gt[d];
              }
            } else {
              sq = full_project_t<T, V>(xt.data(), mu, W, D, dbuf.data(), ybuf.data());
              if (hasG) {  // G.s_k = -(W G).y
                full_matvec_t<T, V>(W, D, Gt.data(), wg.data());
                for (int64_t i = 0; i < D; ++i) gs -= wg[i] * ybuf[i];
              }
            }
            Pk[k] = logit_of(splat<V>(cb[k]), sq);
            mx = Pk[k] > mx ? Pk[k] : mx;
            if (hasG) GS[k] = gs;
          }
          mx = mx == splat<V>(neg_inf<T>()) ? V{} : mx;  // every logit -inf: Z = 0 and r = NaN, as in the forward
          V gsum = V{}, hsum = V{}, zsum = V{};
          for (int64_t k = 0; k < K; ++k) {
            const V p = live != V{} ? vexp(Pk[k] - mx) : V{};
            Pk[k] = p;
            zsum += p;
            if (hasG) gsum += p * GS[k];
            if (hasH) hsum += p * Hk[k];
          }
          const V zinv = live != V{} ? T(1) / zsum : V{};
          for (int64_t k = 0; k < K; ++k) Pk[k] *= zinv;
          gsum *= zinv;
          hsum *= zinv;
          // a_k
          for (int64_t k = 0; k < K; ++k) {
            const V gsd = hasG ? GS[k] - gsum : V{};
            const V hd = hasH ? Hk[k] - hsum : V{};
            A[k] = dlogit(Pk[k], gr, gsd, hd);
            A[k] = live != V{} ? A[k] : V{};
            lc[k] += A[k];
          }
          // pass 2: gy_k, grad_x, parameter gradients
          for (int64_t d = 0; d < D; ++d) gxt[d] = V{};
          for (int64_t k = 0; k < K; ++k) {
            const V pk = Pk[k], ak = A[k];
            const T* mu = mub + k * D;
            const T* W = Wb + k * PD;
            V* lmuk = lmu.data() + k * D;
            if (!FULL) {
              V* lwk = lw.data() + k * D;
              if (hasG) {
                for (int64_t d = 0; d < D; ++d) {
                  const V wv = splat<V>(W[d]), x = xt[d], m = splat<V>(mu[d]), Gd = Gt[d];
                  const V y = diag_y(wv, x, m);
                  const V gy = grad_y(ak, y, pk, wv * Gd);
                  const V t = wv * gy;
                  gxt[d] += t;
                  lmuk[d] -= t;
                  lwk[d] += grad_w(gy, x - m, pk, y, Gd);
                }
              } else {
                for (int64_t d = 0; d < D; ++d) {
                  const V wv = splat<V>(W[d]), x = xt[d], m = splat<V>(mu[d]);
                  const V y = diag_y(wv, x, m);
                  const V gy = grad_y(ak, y, pk, V{});
                  const V t = wv * gy;
                  gxt[d] += t;
                  lmuk[d] -= t;
                  lwk[d] += gy * (x - m);
                }
              }
            } else {
              full_project_t<T, V>(xt.data(), mu, W, D, dbuf.data(), ybuf.data());
              if (hasG) full_matvec_t<T, V>(W, D, Gt.data(), wg.data());
              for (int64_t i = 0; i < D; ++i) gyt[i] = grad_y(ak, ybuf[i], pk, hasG ? wg[i] : V{});
              // W^T gy into gx (+) and the mean gradient (-)
              for (int64_t j = 0; j < D; ++j) {
                V a = V{};
                for (int64_t i = j; i < D; ++i) a += W[i * D + j] * gyt[i];
                gxt[j] += a;
                lmuk[j] -= a;
              }
              // gW_k[i][j] (j <= i): lane sums of gy_i delta_j - r y_i G_j, reduced right away
              T* gWk = pb + K * D + k * PD;
              for (int64_t i = 0; i < D; ++i) {
                const V gyi = gyt[i], yi = ybuf[i];
                for (int64_t j = 0; j <= i; ++j) {
                  const V v = hasG ? grad_w(gyi, dbuf[j], pk, yi, Gt[j]) : gyi * dbuf[j];
                  gWk[i * D + j] += lane_sum<T, V>(v);
                }
              }
            }
          }
          store_rows_t<T, V>(gxt.data(), D, n0, nr, Gr.gx + b * N * D);
        }
        // fold the lane accumulators of this chunk into its partial slot (fixed pairwise order over lanes)
        for (int64_t i = 0; i < K * D; ++i) pb[i] = lane_sum<T, V>(lmu[i]);
        if (!FULL)
          for (int64_t i = 0; i < K * D; ++i) pb[K * D + i] = lane_sum<T, V>(lw[i]);
        for (int64_t k = 0; k < K; ++k) pb[K * D + K * PD + k] = lane_sum<T, V>(lc[k]);
      }
    });
  }
  // fixed-order sum over chunks
  at::parallel_for(0, B * K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bk = begin; bk < end; ++bk) {
      const int64_t b = bk / K, k = bk % K;
      T* om = gmeans + bk * D;
      T* ow = gprec + bk * PD;
      T* oc = glogc + bk;
      for (int64_t d = 0; d < D; ++d) om[d] = T(0);
      for (int64_t e = 0; e < PD; ++e) ow[e] = T(0);
      *oc = T(0);
      for (int64_t c = 0; c < nch; ++c) {
        const T* pb = part.data() + (b * nch + c) * per;
        for (int64_t d = 0; d < D; ++d) om[d] += pb[k * D + d];
        for (int64_t e = 0; e < PD; ++e) ow[e] += pb[K * D + k * PD + e];
        *oc += pb[K * D + K * PD + k];
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------- ops

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_stats_cpu(const at::Tensor& x, const at::Tensor& means,
                                                                 const at::Tensor& prec, const at::Tensor& logc,
                                                                 bool full, bool with_score, bool with_resp) {
  const Sizes s = check_inputs(x, means, prec, logc, full, c10::DeviceType::CPU);
  auto xc = x.contiguous(), mc = means.contiguous(), pc = prec.contiguous(), cc = logc.contiguous();
  auto logp = at::empty({s.B, s.N}, x.options());
  auto score = optional_output(with_score, {s.B, s.N, s.D}, x.options());
  auto resp = optional_output(with_resp, {s.B, s.N, s.K}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_stats_cpu", [&] {
    Problem<scalar_t> P{xc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(),
                        cc.data_ptr<scalar_t>(), s.B, s.N, s.K, s.D, full};
    scalar_t* sp = with_score ? score.data_ptr<scalar_t>() : nullptr;
    scalar_t* rp = with_resp ? resp.data_ptr<scalar_t>() : nullptr;
    if (full)
      forward_impl<scalar_t, true>(P, logp.data_ptr<scalar_t>(), sp, rp);
    else
      forward_impl<scalar_t, false>(P, logp.data_ptr<scalar_t>(), sp, rp);
  });
  return {logp, score, resp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_stats_backward_cpu(
    const at::Tensor& grad_logp, const c10::optional<at::Tensor>& grad_score, const c10::optional<at::Tensor>& grad_resp,
    const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec, const at::Tensor& logc, const at::Tensor& logp,
    bool full) {
  const Sizes s = check_inputs(x, means, prec, logc, full, c10::DeviceType::CPU);
  check_backward_inputs(s, x, grad_logp, grad_score, grad_resp, logp);
  auto xc = x.contiguous(), mc = means.contiguous(), pc = prec.contiguous(), cc = logc.contiguous();
  auto gc = grad_logp.contiguous(), lc = logp.contiguous();
  auto Gc = optional_contiguous(grad_score), Hc = optional_contiguous(grad_resp);
  auto gx = at::empty_like(xc), gm = at::empty_like(mc), gp = at::empty_like(pc), gl = at::empty_like(cc);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_stats_backward_cpu", [&] {
    Problem<scalar_t> P{xc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(),
                        cc.data_ptr<scalar_t>(), s.B, s.N, s.K, s.D, full};
    Grads<scalar_t> G{gc.data_ptr<scalar_t>(), optional_data<scalar_t>(Gc), optional_data<scalar_t>(Hc),
                      lc.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>()};
    if (full)
      backward_impl<scalar_t, true>(P, G, gm.data_ptr<scalar_t>(), gp.data_ptr<scalar_t>(), gl.data_ptr<scalar_t>());
    else
      backward_impl<scalar_t, false>(P, G, gm.data_ptr<scalar_t>(), gp.data_ptr<scalar_t>(), gl.data_ptr<scalar_t>());
  });
  return {gx, gm, gp, gl};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) {
  m.impl("mixture_stats", &gmmkernels::mixture_stats_cpu);
  m.impl("mixture_stats_backward", &gmmkernels::mixture_stats_backward_cpu);
}
