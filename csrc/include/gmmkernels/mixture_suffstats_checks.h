// Argument checks of mixture_suffstats shared by the CPU and CUDA host code (ATen; not for .cu files). The device is
// checked by each backend.
#pragma once
#include <torch/all.h>

#include <climits>

#include "gmmkernels/mixture_suffstats_blocks.h"

namespace gmmkernels {
namespace mixture_suffstats {

struct Sizes {
  int64_t B, N, K, D;
};

// x [B or 1, N, D], resp [B, N, K]; float32 or float64, one dtype.
inline Sizes check_inputs(const at::Tensor& x, const at::Tensor& resp) {
  TORCH_CHECK(x.dim() == 3, "mixture_suffstats: x must be [B, N, D], got ", x.sizes());
  TORCH_CHECK(resp.dim() == 3, "mixture_suffstats: resp must be [B, N, K], got ", resp.sizes());
  TORCH_CHECK(x.scalar_type() == resp.scalar_type(), "mixture_suffstats: x and resp must have one dtype, got ",
              x.scalar_type(), " and ", resp.scalar_type());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "mixture_suffstats: float32 or float64 expected, got ", x.scalar_type());
  const int64_t B = resp.size(0), N = resp.size(1), K = resp.size(2), D = x.size(2);
  TORCH_CHECK(x.size(0) == B || x.size(0) == 1, "mixture_suffstats: x has batch ", x.size(0), " but resp has ", B);
  TORCH_CHECK(x.size(1) == N, "mixture_suffstats: x has N=", x.size(1), " but resp has N=", N);
  return {B, N, K, D};
}

// A call of the block-program kernels (gmmkernels/mixture_suffstats_blocks.h), prepared by the CUDA host code and by
// their CPU run (csrc/simt/mixture_suffstats.cpp): the inputs checked (with the kernels' index and grid limits) and
// made contiguous, the outputs, the scratch and the workspace allocated.
struct BlockCall {
  Sizes z;
  at::Tensor x, r, nk, sx, sxx, tmp, ws;
};

inline BlockCall prepare_block_call(const at::Tensor& x, const at::Tensor& resp, bool full, c10::DeviceType expect) {
  const auto z = check_inputs(x, resp);
  TORCH_CHECK(x.device().type() == expect && resp.device() == x.device(), "mixture_suffstats: x and resp must be on one ",
              c10::DeviceTypeName(expect), " device, got ", x.device(), " and ", resp.device());
  const int64_t B = z.B, N = z.N, K = z.K, D = z.D;
  // int32 row indices in the kernels, and chunks rounded up to a multiple of 64 rows
  TORCH_CHECK(N < INT32_MAX - 64 && K < INT32_MAX && D < INT32_MAX, "mixture_suffstats: sizes too large for CUDA (N=", N,
              ", K=", K, ", D=", D, ")");
  int64_t chunk = 0;
  const int64_t Sd = splits(B, N, K, D, false, &chunk);
  TORCH_CHECK(B * Sd <= 65535 && (K + 31) / 32 <= 65535,
              "mixture_suffstats: too many mixtures or components in one call on CUDA (B=", B, ", K=", K,
              "); split the batch");
  if (full && D > 0) {
    const int64_t Sf = splits(B, N, K, D, true, &chunk);
    TORCH_CHECK(B * K * Sf <= INT32_MAX && (D + 15) / 16 <= 65535,
                "mixture_suffstats: full second moments too large for one CUDA launch (B=", B, ", K=", K, ", D=", D,
                ")");
  }
  BlockCall c;
  c.z = z;
  c.x = x.contiguous();
  c.r = resp.contiguous();
  c.nk = at::empty({B, K}, x.options());
  c.sx = at::empty({B, K, D}, x.options());
  c.sxx = full ? at::empty({B, K, D, D}, x.options()) : at::empty({B, K, D}, x.options());
  if (full) c.tmp = at::empty({B, K, D}, x.options());
  const int64_t ws = workspace(B, N, K, D, full);
  if (ws > 0) c.ws = at::empty({ws}, x.options());
  return c;
}

}  // namespace mixture_suffstats
}  // namespace gmmkernels
