// Argument checks of gmmkernels::mixture_stats and mixture_stats_backward (host code, shared by the CPU and
// CUDA implementations). Every message starts with "mixture_stats:" and names the offending argument.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

namespace gmmkernels {
namespace mixture_stats {

struct Sizes {
  int64_t B, N, K, D;
};

inline void check_float_like(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.defined(), "mixture_stats: argument '", name, "' is undefined");
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "mixture_stats: argument '", name, "' has dtype ", t.scalar_type(),
              " but 'x' has dtype ", x.scalar_type(), "; all tensors must share one dtype");
  TORCH_CHECK(t.device() == x.device(), "mixture_stats: argument '", name, "' is on ", t.device(), " but 'x' is on ",
              x.device(), "; all tensors must be on one device");
}

inline Sizes check_inputs(const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec, const at::Tensor& logc,
                          bool full, c10::DeviceType expect) {
  TORCH_CHECK(x.defined(), "mixture_stats: argument 'x' is undefined");
  TORCH_CHECK(x.device().type() == expect, "mixture_stats: argument 'x' is on ", x.device(), " but this kernel runs on ",
              c10::DeviceTypeName(expect));
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "mixture_stats: argument 'x' must be float32 or float64, got ", x.scalar_type());
  check_float_like(means, "means", x);
  check_float_like(prec, "prec", x);
  check_float_like(logc, "logc", x);
  TORCH_CHECK(x.dim() == 3, "mixture_stats: argument 'x' must have shape [B, N, D], got ", x.sizes());
  TORCH_CHECK(means.dim() == 3, "mixture_stats: argument 'means' must have shape [B, K, D], got ", means.sizes());
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), K = means.size(1);
  TORCH_CHECK(means.size(0) == B && means.size(2) == D, "mixture_stats: argument 'means' must have shape [B=", B,
              ", K, D=", D, "] to match 'x' ", x.sizes(), ", got ", means.sizes());
  TORCH_CHECK(K >= 1, "mixture_stats: argument 'means' has K=0 components; at least one is needed");
  TORCH_CHECK(logc.dim() == 2 && logc.size(0) == B && logc.size(1) == K,
              "mixture_stats: argument 'logc' must have shape [B=", B, ", K=", K, "], got ", logc.sizes());
  if (full) {
    TORCH_CHECK(prec.dim() == 4 && prec.size(0) == B && prec.size(1) == K && prec.size(2) == D && prec.size(3) == D,
                "mixture_stats: argument 'prec' (full=true) must have shape [B=", B, ", K=", K, ", D=", D, ", D=", D,
                "], got ", prec.sizes());
  } else {
    TORCH_CHECK(prec.dim() == 3 && prec.size(0) == B && prec.size(1) == K && prec.size(2) == D,
                "mixture_stats: argument 'prec' (full=false) must have shape [B=", B, ", K=", K, ", D=", D, "], got ",
                prec.sizes());
  }
  return {B, N, K, D};
}

inline void check_backward_inputs(const Sizes& s, const at::Tensor& x, const at::Tensor& grad_logp,
                                  const c10::optional<at::Tensor>& grad_score, const c10::optional<at::Tensor>& grad_resp,
                                  const at::Tensor& logp) {
  check_float_like(grad_logp, "grad_logp", x);
  TORCH_CHECK(grad_logp.dim() == 2 && grad_logp.size(0) == s.B && grad_logp.size(1) == s.N,
              "mixture_stats: argument 'grad_logp' must have shape [B=", s.B, ", N=", s.N, "], got ", grad_logp.sizes());
  check_float_like(logp, "logp", x);
  TORCH_CHECK(logp.dim() == 2 && logp.size(0) == s.B && logp.size(1) == s.N,
              "mixture_stats: argument 'logp' must have shape [B=", s.B, ", N=", s.N, "], got ", logp.sizes());
  if (grad_score.has_value() && grad_score->defined()) {
    check_float_like(*grad_score, "grad_score", x);
    TORCH_CHECK(grad_score->dim() == 3 && grad_score->size(0) == s.B && grad_score->size(1) == s.N &&
                    grad_score->size(2) == s.D,
                "mixture_stats: argument 'grad_score' must have shape [B=", s.B, ", N=", s.N, ", D=", s.D, "], got ",
                grad_score->sizes());
  }
  if (grad_resp.has_value() && grad_resp->defined()) {
    check_float_like(*grad_resp, "grad_resp", x);
    TORCH_CHECK(grad_resp->dim() == 3 && grad_resp->size(0) == s.B && grad_resp->size(1) == s.N &&
                    grad_resp->size(2) == s.K,
                "mixture_stats: argument 'grad_resp' must have shape [B=", s.B, ", N=", s.N, ", K=", s.K, "], got ",
                grad_resp->sizes());
  }
}

}  // namespace mixture_stats
}  // namespace gmmkernels
