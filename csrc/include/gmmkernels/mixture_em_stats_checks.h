// Argument checks of gmmkernels::mixture_em_stats shared by the CPU and CUDA host code (ATen; not for .cu files).
// Every message starts with "mixture_em_stats:" and names the argument.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <initializer_list>
#include <tuple>
#include <utility>
#include <vector>

#include "gmmkernels/mixture_em_stats_blocks.h"  // Plan, kEMStatsMax*D

namespace gmmkernels {
namespace mixture_em_stats {

struct Sizes {
  int64_t B, N, K, D;
};

using Named = std::pair<const char*, const at::Tensor*>;

// Every tensor of `args` is defined, on one device of type `expect` (that of the first) and of the first one's
// dtype. Messages start with "<op>:" and name the argument and the first one.
inline void check_same_device_dtype(const char* op, std::initializer_list<Named> args, c10::DeviceType expect) {
  const Named& first = *args.begin();
  const at::Tensor& t0 = *first.second;
  for (const auto& a : args) {
    TORCH_CHECK(a.second->defined(), op, ": argument '", a.first, "' is undefined");
    TORCH_CHECK(a.second->device().type() == expect && a.second->device() == t0.device(), op, ": argument '", a.first,
                "' is on ", a.second->device(), "; this kernel runs on one ", c10::DeviceTypeName(expect), " device (",
                first.first, " is on ", t0.device(), ")");
    TORCH_CHECK(a.second->scalar_type() == t0.scalar_type(), op, ": argument '", a.first, "' has dtype ",
                a.second->scalar_type(), " but '", first.first, "' has ", t0.scalar_type(),
                "; all tensors must share one dtype");
  }
}

// cov_kind of mixture_em_mstep / mixture_em_iterate: 0 diag, 1 spherical, 2 full.
inline void check_cov_kind(const char* op, int64_t cov_kind) {
  TORCH_CHECK(cov_kind >= 0 && cov_kind <= 2, op, ": argument 'cov_kind' must be 0 (diag), 1 (spherical) or 2 (full), ",
              "got ", cov_kind);
}

// reg_covar of mixture_em_mstep / mixture_em_iterate: a finite number >= 0.
inline void check_reg_covar(const char* op, double reg_covar) {
  TORCH_CHECK(reg_covar >= 0.0 && std::isfinite(reg_covar), op, ": argument 'reg_covar' must be a finite number >= 0, ",
              "got ", reg_covar);
}

// The shape of a mixture's scale: [B, K, D] (diag), [B, K] (spherical), [B, K, D, D] (full, the Cholesky factor).
inline std::vector<int64_t> scale_sizes(int64_t B, int64_t K, int64_t D, int64_t cov_kind) {
  return cov_kind == 2 ? std::vector<int64_t>{B, K, D, D}
                       : cov_kind == 1 ? std::vector<int64_t>{B, K} : std::vector<int64_t>{B, K, D};
}

// x [B or 1, N, D], means [B, K, D], prec [B, K, D] (full=false) or [B, K, D, D] (full=true), logc [B, K]; one
// float dtype and one device of type `expect`.
inline Sizes check_inputs(const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec, const at::Tensor& logc,
                          bool full, c10::DeviceType expect) {
  check_same_device_dtype("mixture_em_stats", {{"x", &x}, {"means", &means}, {"prec", &prec}, {"logc", &logc}}, expect);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "mixture_em_stats: argument 'x' must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 3, "mixture_em_stats: argument 'x' must have shape [B or 1, N, D], got ", x.sizes());
  TORCH_CHECK(means.dim() == 3, "mixture_em_stats: argument 'means' must have shape [B, K, D], got ", means.sizes());
  const int64_t B = means.size(0), K = means.size(1), D = means.size(2), N = x.size(1);
  TORCH_CHECK((x.size(0) == B || x.size(0) == 1) && x.size(2) == D, "mixture_em_stats: argument 'x' must have shape [B=",
              B, " or 1, N, D=", D, "] to match 'means' ", means.sizes(), ", got ", x.sizes());
  TORCH_CHECK(K >= 1, "mixture_em_stats: argument 'means' has K=0 components; at least one is needed");
  TORCH_CHECK(logc.dim() == 2 && logc.size(0) == B && logc.size(1) == K,
              "mixture_em_stats: argument 'logc' must have shape [B=", B, ", K=", K, "], got ", logc.sizes());
  if (full) {
    TORCH_CHECK(prec.dim() == 4 && prec.size(0) == B && prec.size(1) == K && prec.size(2) == D && prec.size(3) == D,
                "mixture_em_stats: argument 'prec' (full=true) must have shape [B=", B, ", K=", K, ", D=", D, ", D=", D,
                "], got ", prec.sizes());
  } else {
    TORCH_CHECK(prec.dim() == 3 && prec.size(0) == B && prec.size(1) == K && prec.size(2) == D,
                "mixture_em_stats: argument 'prec' (full=false) must have shape [B=", B, ", K=", K, ", D=", D,
                "], got ", prec.sizes());
  }
  return {B, N, K, D};
}

// A call of the block-program kernels (gmmkernels/mixture_em_stats_blocks.h), prepared by the CUDA host code and
// by their CPU run (csrc/simt/mixture_em_stats.cpp): the inputs checked (with the kernels' limits on D and the
// sizes) and made contiguous, W mu computed (one small product per component, in ATen), the outputs and the
// workspace (Plan::workspace) allocated.
struct BlockCall {
  Sizes z;
  at::Tensor x, prec, wmu, logc, lp, rl, nk, sx, sxx, resp, ws;
};

inline BlockCall prepare_block_call(const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec,
                                    const at::Tensor& logc, bool full, bool with_resp, c10::DeviceType expect) {
  const auto z = check_inputs(x, means, prec, logc, full, expect);
  const int64_t B = z.B, N = z.N, K = z.K, D = z.D;
  const int64_t maxD = full ? kEMStatsMaxFullD : kEMStatsMaxDiagD;
  TORCH_CHECK(D <= maxD, "mixture_em_stats: D=", D, " exceeds the ", maxD, " dimensions of the fused CUDA kernel for ",
              full ? "full" : "diagonal", " covariances; use mixture_stats with responsibilities and mixture_suffstats "
              "(gmmkernels.fit_em / fit_vb switch to them by themselves)");
  TORCH_CHECK(N < INT32_MAX && K < INT32_MAX && B <= 65535, "mixture_em_stats: sizes too large for one CUDA call (B=", B,
              ", N=", N, ", K=", K, "); split the batch");
  BlockCall c;
  c.z = z;
  c.x = x.contiguous();
  c.prec = prec.contiguous();
  c.logc = logc.contiguous();
  const auto mc = means.contiguous();
  c.wmu = (full ? at::matmul(at::tril(c.prec), mc.unsqueeze(-1)).squeeze(-1) : c.prec * mc).contiguous();
  const auto opt = x.options();
  c.lp = at::empty({B}, opt);
  c.rl = at::empty({B}, opt);
  c.nk = at::empty({B, K}, opt);
  c.sx = at::empty({B, K, D}, opt);
  c.sxx = full ? at::empty({B, K, D, D}, opt) : at::empty({B, K, D}, opt);
  c.resp = with_resp ? at::empty({B, N, K}, opt) : at::empty({0}, opt);
  c.ws = at::empty({std::max<int64_t>(1, Plan(B, N, K, D, full).workspace(B, N, K))}, opt);
  return c;
}

struct MStepSizes {
  int64_t B, K, D;
};

// mixture_em_mstep: nk [B, K], sx [B, K, D], sxx [B, K, D] (diag, spherical) or [B, K, D, D] (full); one float dtype
// and one device of type `expect`; cov_kind 0 (diag), 1 (spherical) or 2 (full); reg_covar >= 0.
inline MStepSizes check_mstep_inputs(const at::Tensor& nk, const at::Tensor& sx, const at::Tensor& sxx, int64_t cov_kind,
                                     double reg_covar, c10::DeviceType expect) {
  check_same_device_dtype("mixture_em_mstep", {{"nk", &nk}, {"sx", &sx}, {"sxx", &sxx}}, expect);
  TORCH_CHECK(nk.scalar_type() == at::kFloat || nk.scalar_type() == at::kDouble,
              "mixture_em_mstep: argument 'nk' must be float32 or float64, got ", nk.scalar_type());
  check_cov_kind("mixture_em_mstep", cov_kind);
  check_reg_covar("mixture_em_mstep", reg_covar);
  TORCH_CHECK(nk.dim() == 2 && nk.size(1) >= 1, "mixture_em_mstep: argument 'nk' must have shape [B, K] with K >= 1, got ",
              nk.sizes());
  const int64_t B = nk.size(0), K = nk.size(1);
  TORCH_CHECK(sx.dim() == 3 && sx.size(0) == B && sx.size(1) == K && sx.size(2) >= 1,
              "mixture_em_mstep: argument 'sx' must have shape [B=", B, ", K=", K, ", D >= 1], got ", sx.sizes());
  const int64_t D = sx.size(2);
  if (cov_kind == 2) {
    TORCH_CHECK(sxx.dim() == 4 && sxx.size(0) == B && sxx.size(1) == K && sxx.size(2) == D && sxx.size(3) == D,
                "mixture_em_mstep: argument 'sxx' (full) must have shape [B=", B, ", K=", K, ", D=", D, ", D=", D,
                "], got ", sxx.sizes());
  } else {
    TORCH_CHECK(sxx.dim() == 3 && sxx.size(0) == B && sxx.size(1) == K && sxx.size(2) == D,
                "mixture_em_mstep: argument 'sxx' must have shape [B=", B, ", K=", K, ", D=", D, "], got ", sxx.sizes());
  }
  return {B, K, D};
}

// The outputs of mixture_em_mstep (logits [B, K], means [B, K, D], scale, prec, logc [B, K], ok [B, K] bool); scale is
// [B, K, D] (diag), [B, K] (spherical) or [B, K, D, D] (full); prec is [B, K, D] or [B, K, D, D] (full).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mstep_outputs(
    const MStepSizes& s, int64_t cov_kind, const at::TensorOptions& opt) {
  const int64_t B = s.B, K = s.K, D = s.D;
  auto scale = at::empty(scale_sizes(B, K, D, cov_kind), opt);
  auto prec = cov_kind == 2 ? at::empty({B, K, D, D}, opt) : at::empty({B, K, D}, opt);
  return {at::empty({B, K}, opt), at::empty({B, K, D}, opt), scale, prec, at::empty({B, K}, opt),
          at::empty({B, K}, opt.dtype(at::kBool))};
}

}  // namespace mixture_em_stats
}  // namespace gmmkernels
