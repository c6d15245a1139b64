// The extension module gmmkernels._C: the schemas of every op (torch.library) and a pybind11
// entry point with build information. Kernels register their implementations per dispatch key in
// csrc/cpu/<op>.cpp and csrc/cuda/<op>.cpp.
#include <torch/extension.h>
#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda_runtime_api.h>  // CUDART_VERSION
#endif

#include "gmmkernels/cpu_vec.h"  // kVecBytes: the vector width of the CPU kernels

#ifndef GMMKERNELS_CUDA_ARCHS
#define GMMKERNELS_CUDA_ARCHS ""
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict d;
#ifdef WITH_CUDA
  d["with_cuda"] = true;
  d["cuda_version"] = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
#else
  d["with_cuda"] = false;
  d["cuda_version"] = pybind11::none();
#endif
  d["cuda_archs"] = std::string(GMMKERNELS_CUDA_ARCHS);
#ifdef _OPENMP
  d["openmp"] = true;
#else
  d["openmp"] = false;
#endif
#if defined(__AVX512F__)
  d["cpu_simd"] = "avx512";
#elif defined(__AVX2__)
  d["cpu_simd"] = "avx2";
#elif defined(__ARM_NEON)
  d["cpu_simd"] = "neon";
#else
  d["cpu_simd"] = "baseline";
#endif
  d["cpu_vector_bytes"] = gmmkernels::cpu::kVecBytes;
#ifdef GMMKERNELS_CPU_NATIVE
  d["cpu_native"] = true;
#else
  d["cpu_native"] = false;
#endif
  d["torch_version_built"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                             std::to_string(TORCH_VERSION_PATCH);
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gmmkernels native kernels (ops are reached through torch.ops.gmmkernels)";
  m.def("build_info", &build_info, "How this extension was built");
}

TORCH_LIBRARY(gmmkernels, m) {
  // Fused Gaussian-mixture statistics (see gmmkernels/reference.py: mixture_stats_kernel_ref).
  //   x [B,N,D], means [B,K,D], prec = W (diag: [B,K,D]; full: lower-triangular [B,K,D,D]), logc [B,K]
  //   logit[b,n,k] = logc[b,k] - 0.5 * |W_bk (x_bn - mu_bk)|^2
  //   returns logp [B,N]; score [B,N,D] (or [0] if !with_score); resp [B,N,K] (or [0] if !with_resp)
  m.def(
      "mixture_stats(Tensor x, Tensor means, Tensor prec, Tensor logc, bool full, bool with_score, "
      "bool with_resp) -> (Tensor, Tensor, Tensor)");
  // Vector-Jacobian product of mixture_stats. grad_logp always defined ([B,N]); grad_score [B,N,D] and
  // grad_resp [B,N,K] optional. logp is the forward output (responsibilities are recomputed from it).
  // Returns (grad_x [B,N,D], grad_means [B,K,D], grad_prec (shape of prec; upper triangle zero), grad_logc [B,K]).
  m.def(
      "mixture_stats_backward(Tensor grad_logp, Tensor? grad_score, Tensor? grad_resp, Tensor x, Tensor means, "
      "Tensor prec, Tensor logc, Tensor logp, bool full) -> (Tensor, Tensor, Tensor, Tensor)");
  // SMD low-rank-plus-diagonal adapter (see gmmkernels/smd_reference.py: lowrank_adapter_ref).
  //   r [P,d], u [P,L,d], s [L];  out = W_L(...(W_1 r)),  W_l r = u_l (u_l . r) + softplus(s_l) r  -> out [P,d]
  m.def("lowrank_adapter(Tensor r, Tensor u, Tensor s) -> Tensor");
  // Its vector-Jacobian product: returns (grad_r [P,d], grad_u [P,L,d], grad_s [L]); recomputes the forward.
  m.def("lowrank_adapter_backward(Tensor grad_out, Tensor r, Tensor u, Tensor s) -> (Tensor, Tensor, Tensor)");
  // M-step sufficient statistics (gmmkernels/fit_reference.py: mixture_suffstats_ref). x [B or 1,N,D], resp [B,N,K] ->
  //   nk [B,K] = sum_n r,  sx [B,K,D] = sum_n r x,  sxx = sum_n r x^2 [B,K,D] (!full) or sum_n r x x^T [B,K,D,D] (full).
  //   Deterministic (fixed summation order, no atomics).
  m.def("mixture_suffstats(Tensor x, Tensor resp, bool full) -> (Tensor, Tensor, Tensor)");
  // The CUDA kernels of mixture_suffstats run on CPU threads (csrc/simt/mixture_suffstats.cpp; CPU tensors, small
  //   problems): the arguments and results of mixture_suffstats, for testing those kernels without a GPU.
  m.def("_simt_mixture_suffstats(Tensor x, Tensor resp, bool full) -> (Tensor, Tensor, Tensor)");
  // One Gibbs sweep over B independent chains of a conjugate diagonal Bayesian GMM
  //   (csrc/include/gmmkernels/gibbs_sweep.h).
  //   x [B or 1,N,D], logw [B,K], means/var [B,K,D], m0 [D] -> (z [B,N] int32, logw, means, var) of the next state;
  //   chain b draws the random streams of chain chain0 + b (a shard of a larger run draws what the whole run would).
  m.def(
      "gibbs_sweep(Tensor x, Tensor logw, Tensor means, Tensor var, Tensor m0, float alpha, float kappa0, float a0, "
      "float b0, int seed, int step, int chain0=0) -> (Tensor, Tensor, Tensor, Tensor)");
  // The CUDA kernels of gibbs_sweep run on CPU threads (csrc/simt/gibbs_sweep.cpp; CPU tensors, small problems): the
  //   arguments and results of gibbs_sweep, for testing those kernels without a GPU.
  m.def(
      "_simt_gibbs_sweep(Tensor x, Tensor logw, Tensor means, Tensor var, Tensor m0, float alpha, float kappa0, "
      "float a0, float b0, int seed, int step, int chain0=0) -> (Tensor, Tensor, Tensor, Tensor)");
  // Fused MGDM Gauss_VI step (csrc/include/gmmkernels/mgdm_step.h): state [6,B,P] = (mu, rho, Adam m_mu, m_rho, v_mu,
  //   v_rho), updated in place; grad_v, eps, m [B,P]; inv_sigma2 [B]. Returns (v_next, eps_next) [B,P].
  m.def(
      "mgdm_vi_step(Tensor(a!) state, Tensor grad_v, Tensor eps, Tensor m, Tensor inv_sigma2, float lr, float beta1, "
      "float beta2, float adam_eps, int step, int seed, int draw) -> (Tensor, Tensor)");
  // Bridge draw cu * u + cw * w + std * z, z ~ N(0, I) counter-based (seed, element, draw).
  m.def("mgdm_bridge(Tensor u, Tensor w, float cu, float cw, float std, int seed, int draw) -> Tensor");
  // Nearest-center dispatcher + centred forward noising of mixDDPM (see gmmkernels/mixddpm_reference.py).
  //   x0 [N,D], centers [K,D], a [N], sigma [N], eps [N,D] or None
  //   j = argmin_k |c_k|^2 - 2 x0.c_k (lowest index on ties, NaN/inf never win); x_t = a x0 + (1-a) c_j + sigma eps
  //   returns (x_t [N,D], assignment [N] int64, dist2 = |x0 - c_j|^2 [N])
  m.def("mixture_dispatch(Tensor x0, Tensor centers, Tensor a, Tensor sigma, Tensor? eps) -> (Tensor, Tensor, Tensor)");
  // GMS per-element two-component fit (csrc/include/gmmkernels/gms_fit.h; gmmkernels/gms_reference.py). mean, var, m3
  //   same shape: w N(mu1, v) + (1-w) N(mu2, v) matching E[x], Var[x], E[x^3]. method 0 = closed form
  //   (v >= var_floor * var), 1 = the official Adan solver (iters, lr; gradient scale 2 / n_el, n_el = 0 means numel).
  //   Returns (mu1, mu2, v).
  m.def(
      "gms_fit(Tensor mean, Tensor var, Tensor m3, float weight, int method, int iters, float lr, float var_floor, "
      "int n_el) -> (Tensor, Tensor, Tensor)");
  // Fused GMS step: moments of x_s | x_t from heads (e1, e2, e3) with the official clamps, fit (method 0 closed, 1 adan,
  //   2 gaussian with variance min(V, var_clip)), component per image (leading index) or per element, x_s = mu + sqrt(v) z
  //   with counter-based (seed, offset) randomness. Returns (x_s, mu1, mu2, v); the last three are [0] if !with_params.
  m.def(
      "gms_step(Tensor x_t, Tensor e1, Tensor e2, Tensor e3, float a_t, float sigma_t, float A, float B, float lam2, "
      "float weight, int method, int iters, float lr, float var_floor, int n_el, bool per_image, float var_clip, int seed, "
      "int offset, bool with_params) -> (Tensor, Tensor, Tensor, Tensor)");
  // One EM / VB iteration in one pass: E-step and sufficient statistics (csrc/include/gmmkernels/mixture_em_stats.h;
  //   gmmkernels/reference/mixture_em_stats.py: mixture_em_stats_kernel_ref). x [B or 1,N,D], means [B,K,D],
  //   prec = W (diag [B,K,D]; full lower-triangular [B,K,D,D]), logc [B,K]; logit = logc - 0.5 |W x - W mu|^2.
  //   Returns (sum_n log p [B], sum_n sum_k r log r [B], nk [B,K], sx [B,K,D], sxx [B,K,D] (!full) or [B,K,D,D]
  //   (full), resp [B,N,K] (or [0] if !with_resp)). Deterministic (fixed summation order, no atomics).
  m.def(
      "mixture_em_stats(Tensor x, Tensor means, Tensor prec, Tensor logc, bool full, bool with_resp) -> (Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor)");
  // The CUDA kernels of mixture_em_stats run on CPU threads (csrc/simt/mixture_em_stats.cpp; CPU tensors, small
  //   problems): the arguments and results of mixture_em_stats, for testing those kernels without a GPU.
  m.def(
      "_simt_mixture_em_stats(Tensor x, Tensor means, Tensor prec, Tensor logc, bool full, bool with_resp) -> (Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The EM M-step from those statistics, and the kernel parameters of the next pass (csrc/include/gmmkernels/
  //   mixture_em_stats.h; gmmkernels/reference/mixture_em_stats.py: mixture_em_mstep_ref). nk [B,K], sx [B,K,D],
  //   sxx [B,K,D] (cov_kind 0 diag, 1 spherical) or [B,K,D,D] (2 full). Returns (logits [B,K], means [B,K,D], scale
  //   (diag [B,K,D], spherical [B,K], full Cholesky factor [B,K,D,D]), prec = W (full: lower-triangular L^-1),
  //   logc [B,K], ok [B,K] bool: false where the covariance is not positive definite, or (float32, full) where it
  //   is not before the regularisation; the other outputs of such a component are unspecified).
  m.def(
      "mixture_em_mstep(Tensor nk, Tensor sx, Tensor sxx, int cov_kind, float reg_covar) -> (Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor)");
  // EM iterations without returning to Python (csrc/include/gmmkernels/mixture_em_stats_iterate.h): from the state
  //   (logits, means, scale, prec, logc) and the lower bound of the last iteration [B], up to max_iter times: pass,
  //   lower bound sum_n log p / n, M-step, convergence |change| < tol. Stops early where some mixture converges (that
  //   iteration kept) or the M-step flags a component (not kept). Returns (logits, means, scale, prec, logc, lower,
  //   converged [B] bool, counts [2] int64 = (iterations kept, 0 max_iter / 1 converged / 2 flagged)).
  m.def(
      "mixture_em_iterate(Tensor x, Tensor logits, Tensor means, Tensor scale, Tensor prec, Tensor logc, Tensor lower, "
      "int cov_kind, float reg_covar, float tol, int max_iter, float n) -> (Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor)");
}
