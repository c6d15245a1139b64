// The EM loop of gmmkernels::mixture_em_iterate, shared by the CPU and the CUDA host code (ATen; not for .cu files):
// pass (mixture_em_stats) -> lower bound -> M-step (mixture_em_mstep) -> convergence, repeated without returning to
// Python. It stops, before max_iter, at the first iteration where some mixture converges (|change of the lower bound|
// < tol; that iteration is kept) or where the M-step flags a component (that iteration is not kept: the caller redoes
// it on its host path). One read of two flags per iteration.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <tuple>

#include "gmmkernels/mixture_em_stats_checks.h"

namespace gmmkernels {
namespace mixture_em_stats {

using Tensors8 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The argument checks of mixture_em_iterate (those of the pass's inputs included); returns the pass's sizes.
inline Sizes check_iterate_inputs(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& means,
                                  const at::Tensor& scale, const at::Tensor& prec, const at::Tensor& logc,
                                  const at::Tensor& lower, int64_t cov_kind, double reg_covar, double tol,
                                  int64_t max_iter, double n, c10::DeviceType expect) {
  check_cov_kind("mixture_em_iterate", cov_kind);
  const Sizes z = check_inputs(x, means, prec, logc, cov_kind == 2, expect);
  const int64_t B = z.B, K = z.K, D = z.D;
  TORCH_CHECK(max_iter >= 0, "mixture_em_iterate: argument 'max_iter' must be >= 0, got ", max_iter);
  check_reg_covar("mixture_em_iterate", reg_covar);
  TORCH_CHECK(tol >= 0.0 && n > 0.0, "mixture_em_iterate: 'tol' must be >= 0 and 'n' > 0, got ", tol, " and ", n);
  TORCH_CHECK(lower.dim() == 1 && lower.size(0) == B && lower.scalar_type() == x.scalar_type() &&
                  lower.device() == x.device(),
              "mixture_em_iterate: argument 'lower' must be [B=", B, "] of the dtype and device of 'x', got ",
              lower.sizes(), " ", lower.scalar_type(), " on ", lower.device());
  TORCH_CHECK(logits.sizes() == at::IntArrayRef({B, K}) && logits.scalar_type() == x.scalar_type() &&
                  logits.device() == x.device(),
              "mixture_em_iterate: argument 'logits' must be [B=", B, ", K=", K, "] of the dtype and device of 'x', got ",
              logits.sizes());
  const std::vector<int64_t> want = scale_sizes(B, K, D, cov_kind);
  TORCH_CHECK(scale.sizes() == at::IntArrayRef(want) && scale.scalar_type() == x.scalar_type() &&
                  scale.device() == x.device(),
              "mixture_em_iterate: argument 'scale' must be ", at::IntArrayRef(want), " of the dtype and device of 'x', ",
              "got ", scale.sizes());
  return z;
}

// pass(x, means, prec, logc, full, with_resp) and mstep(nk, sx, sxx, cov_kind, reg_covar) are the backend's kernels.
// Returns (logits, means, scale, prec, logc, lower [B], converged [B] bool, counts [2] int64 = (iterations kept,
// why it stopped: 0 max_iter, 1 a mixture converged, 2 the M-step flagged a component)). The CPU backend runs the
// same loop on raw buffers (csrc/cpu/mixture_em_stats.cpp: mixture_em_iterate_cpu).
template <class Pass, class MStep>
Tensors8 em_iterate(Pass pass, MStep mstep, const at::Tensor& x, const at::Tensor& logits, const at::Tensor& means,
                    const at::Tensor& scale, const at::Tensor& prec, const at::Tensor& logc, const at::Tensor& lower,
                    int64_t cov_kind, double reg_covar, double tol, int64_t max_iter, double n,
                    c10::DeviceType expect) {
  const bool full = cov_kind == 2;
  const int64_t B = check_iterate_inputs(x, logits, means, scale, prec, logc, lower, cov_kind, reg_covar, tol,
                                         max_iter, n, expect).B;
  const auto fresh = [](const at::Tensor& t) { return t.clone(at::MemoryFormat::Contiguous); };
  at::Tensor lg = fresh(logits), mu = fresh(means), sc = fresh(scale), W = fresh(prec), lc = fresh(logc);
  at::Tensor lo = fresh(lower), conv = at::zeros({B}, lower.options().dtype(at::kBool));
  int64_t kept = 0, why = 0;
  for (int64_t it = 1; it <= max_iter; ++it) {
    const auto st = pass(x, mu, W, lc, full, false);
    const at::Tensor lb = std::get<0>(st) / n;
    const auto p = mstep(std::get<2>(st), std::get<3>(st), std::get<4>(st), cov_kind, reg_covar);
    const at::Tensor c = (lb - lo).abs() < tol;
    const at::Tensor flags = at::stack({std::get<5>(p).all(), c.any()}).to(at::kCPU);
    const bool* f = flags.const_data_ptr<bool>();
    if (!f[0]) {
      why = 2;
      break;
    }
    lg = std::get<0>(p);
    mu = std::get<1>(p);
    sc = std::get<2>(p);
    W = std::get<3>(p);
    lc = std::get<4>(p);
    lo = lb;
    conv = c;
    kept = it;
    if (f[1]) {
      why = 1;
      break;
    }
  }
  at::Tensor counts = at::tensor({kept, why}, at::TensorOptions().dtype(at::kLong)).to(x.device());
  return {lg, mu, sc, W, lc, lo, conv, counts};
}

}  // namespace mixture_em_stats
}  // namespace gmmkernels
