// ATen host side of mixture_suffstats on CUDA (kernels in mixture_suffstats_kernels.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

namespace gmmkernels {

template <typename T>
cudaError_t launch_mixture_suffstats(const T* x, const T* r, T* nk, T* sx, T* sxx, int64_t B, int64_t N, int64_t K, int64_t D,
                                     int64_t x_bstride, bool full, T* diag_tmp, T* workspace, cudaStream_t stream);
int64_t mixture_suffstats_splits(int64_t B, int64_t N, int64_t K, int64_t D, bool full, int64_t* chunk);
int64_t mixture_suffstats_workspace(int64_t B, int64_t N, int64_t K, int64_t D, bool full);

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_suffstats_cuda(const at::Tensor& x, const at::Tensor& resp, bool full) {
  TORCH_CHECK(x.dim() == 3, "mixture_suffstats: x must be [B, N, D], got ", x.sizes());
  TORCH_CHECK(resp.dim() == 3, "mixture_suffstats: resp must be [B, N, K], got ", resp.sizes());
  TORCH_CHECK(x.scalar_type() == resp.scalar_type(), "mixture_suffstats: x and resp must have one dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "mixture_suffstats: float32 or float64 expected");
  TORCH_CHECK(x.is_cuda() && resp.device() == x.device(), "mixture_suffstats: x and resp must be on one CUDA device");
  const int64_t B = resp.size(0), N = resp.size(1), K = resp.size(2), D = x.size(2);
  TORCH_CHECK(x.size(0) == B || x.size(0) == 1, "mixture_suffstats: x has batch ", x.size(0), " but resp has ", B);
  TORCH_CHECK(x.size(1) == N, "mixture_suffstats: x has N=", x.size(1), " but resp has N=", N);
  // int32 row indices in the kernels, and chunks rounded up to a multiple of 64 rows
  TORCH_CHECK(N < INT32_MAX - 64 && K < INT32_MAX && D < INT32_MAX, "mixture_suffstats: sizes too large for CUDA (N=", N,
              ", K=", K, ", D=", D, ")");
  int64_t chunk = 0;
  const int64_t Sd = mixture_suffstats_splits(B, N, K, D, false, &chunk);
  TORCH_CHECK(B * Sd <= 65535 && (K + 31) / 32 <= 65535,
              "mixture_suffstats: too many mixtures or components in one call on CUDA (B=", B, ", K=", K, "); split the batch");
  if (full && D > 0) {
    const int64_t Sf = mixture_suffstats_splits(B, N, K, D, true, &chunk);
    TORCH_CHECK(B * K * Sf <= INT32_MAX && (D + 15) / 16 <= 65535,
                "mixture_suffstats: full second moments too large for one CUDA launch (B=", B, ", K=", K, ", D=", D, ")");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous(), rc = resp.contiguous();
  auto nk = at::empty({B, K}, x.options());
  auto sx = at::empty({B, K, D}, x.options());
  auto sxx = full ? at::empty({B, K, D, D}, x.options()) : at::empty({B, K, D}, x.options());
  auto tmp = full ? at::empty({B, K, D}, x.options()) : at::Tensor();
  const int64_t ws_numel = mixture_suffstats_workspace(B, N, K, D, full);
  auto ws = ws_numel > 0 ? at::empty({ws_numel}, x.options()) : at::Tensor();
  const int64_t xbs = x.size(0) == 1 ? 0 : N * D;
  auto stream = at::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_suffstats_cuda", [&] {
    err = launch_mixture_suffstats<scalar_t>(xc.data_ptr<scalar_t>(), rc.data_ptr<scalar_t>(), nk.data_ptr<scalar_t>(),
                                             sx.data_ptr<scalar_t>(), sxx.data_ptr<scalar_t>(), B, N, K, D, xbs, full,
                                             full ? tmp.data_ptr<scalar_t>() : nullptr,
                                             ws_numel > 0 ? ws.data_ptr<scalar_t>() : nullptr, stream);
  });
  TORCH_CHECK(err == cudaSuccess, "mixture_suffstats: CUDA launch failed: ", cudaGetErrorString(err));
  return {nk, sx, sxx};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) { m.impl("mixture_suffstats", &gmmkernels::mixture_suffstats_cuda); }
