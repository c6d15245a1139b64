// Argument checks of gmmkernels::mixture_em_stats shared by the CPU and CUDA host code (ATen; not for .cu files).
// Every message starts with "mixture_em_stats:" and names the argument.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <tuple>

namespace gmmkernels {
namespace mixture_em_stats {

struct Sizes {
  int64_t B, N, K, D;
};

// x [B or 1, N, D], means [B, K, D], prec [B, K, D] (full=false) or [B, K, D, D] (full=true), logc [B, K]; one
// float dtype and one device of type `expect`.
inline Sizes check_inputs(const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec, const at::Tensor& logc,
                          bool full, c10::DeviceType expect) {
  const std::pair<const char*, const at::Tensor*> args[] = {{"x", &x}, {"means", &means}, {"prec", &prec}, {"logc", &logc}};
  for (const auto& a : args) {
    TORCH_CHECK(a.second->defined(), "mixture_em_stats: argument '", a.first, "' is undefined");
    TORCH_CHECK(a.second->device().type() == expect && a.second->device() == x.device(), "mixture_em_stats: argument '",
                a.first, "' is on ", a.second->device(), "; this kernel runs on one ", c10::DeviceTypeName(expect),
                " device (x is on ", x.device(), ")");
    TORCH_CHECK(a.second->scalar_type() == x.scalar_type(), "mixture_em_stats: argument '", a.first, "' has dtype ",
                a.second->scalar_type(), " but 'x' has ", x.scalar_type(), "; all tensors must share one dtype");
  }
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

struct MStepSizes {
  int64_t B, K, D;
};

// mixture_em_mstep: nk [B, K], sx [B, K, D], sxx [B, K, D] (diag, spherical) or [B, K, D, D] (full); one float dtype
// and one device of type `expect`; cov_kind 0 (diag), 1 (spherical) or 2 (full); reg_covar >= 0.
inline MStepSizes check_mstep_inputs(const at::Tensor& nk, const at::Tensor& sx, const at::Tensor& sxx, int64_t cov_kind,
                                     double reg_covar, c10::DeviceType expect) {
  const std::pair<const char*, const at::Tensor*> args[] = {{"nk", &nk}, {"sx", &sx}, {"sxx", &sxx}};
  for (const auto& a : args) {
    TORCH_CHECK(a.second->defined(), "mixture_em_mstep: argument '", a.first, "' is undefined");
    TORCH_CHECK(a.second->device().type() == expect && a.second->device() == nk.device(), "mixture_em_mstep: argument '",
                a.first, "' is on ", a.second->device(), "; this kernel runs on one ", c10::DeviceTypeName(expect),
                " device (nk is on ", nk.device(), ")");
    TORCH_CHECK(a.second->scalar_type() == nk.scalar_type(), "mixture_em_mstep: argument '", a.first, "' has dtype ",
                a.second->scalar_type(), " but 'nk' has ", nk.scalar_type(), "; all tensors must share one dtype");
  }
  TORCH_CHECK(nk.scalar_type() == at::kFloat || nk.scalar_type() == at::kDouble,
              "mixture_em_mstep: argument 'nk' must be float32 or float64, got ", nk.scalar_type());
  TORCH_CHECK(cov_kind >= 0 && cov_kind <= 2, "mixture_em_mstep: argument 'cov_kind' must be 0 (diag), 1 (spherical) or ",
              "2 (full), got ", cov_kind);
  TORCH_CHECK(reg_covar >= 0.0 && std::isfinite(reg_covar), "mixture_em_mstep: argument 'reg_covar' must be a finite ",
              "number >= 0, got ", reg_covar);
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
  const bool full = cov_kind == 2;
  auto scale = full ? at::empty({B, K, D, D}, opt) : cov_kind == 1 ? at::empty({B, K}, opt) : at::empty({B, K, D}, opt);
  auto prec = full ? at::empty({B, K, D, D}, opt) : at::empty({B, K, D}, opt);
  return {at::empty({B, K}, opt), at::empty({B, K, D}, opt), scale, prec, at::empty({B, K}, opt),
          at::empty({B, K}, opt.dtype(at::kBool))};
}

}  // namespace mixture_em_stats
}  // namespace gmmkernels
