// ATen host side of gibbs_sweep on CUDA (kernel in gibbs_sweep_kernels.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

namespace gmmkernels {

template <typename T>
cudaError_t launch_gibbs_sweep(const T* x, int64_t x_bstride, const T* logw, const T* mu, const T* var, const T* m0, int32_t* z,
                               T* logw_o, T* mu_o, T* var_o, int64_t B, int64_t N, int64_t K, int64_t D, double alpha, double kappa0,
                               double a0, double b0, uint64_t seed, uint32_t step, cudaStream_t stream);

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gibbs_sweep_cuda(const at::Tensor& x, const at::Tensor& logw,
                                                                            const at::Tensor& means, const at::Tensor& var,
                                                                            const at::Tensor& m0, double alpha, double kappa0,
                                                                            double a0, double b0, int64_t seed, int64_t step) {
  TORCH_CHECK(x.dim() == 3, "gibbs_sweep: x must be [B or 1, N, D], got ", x.sizes());
  TORCH_CHECK(logw.dim() == 2, "gibbs_sweep: logw must be [B, K], got ", logw.sizes());
  const int64_t B = logw.size(0), K = logw.size(1), N = x.size(1), D = x.size(2);
  TORCH_CHECK(x.size(0) == B || x.size(0) == 1, "gibbs_sweep: x has batch ", x.size(0), " but there are ", B, " chains");
  TORCH_CHECK(means.sizes() == at::IntArrayRef({B, K, D}), "gibbs_sweep: means must be [B, K, D], got ", means.sizes());
  TORCH_CHECK(var.sizes() == means.sizes(), "gibbs_sweep: var must have the shape of means, got ", var.sizes());
  TORCH_CHECK(m0.dim() == 1 && m0.size(0) == D, "gibbs_sweep: m0 must be [D], got ", m0.sizes());
  TORCH_CHECK(K >= 1, "gibbs_sweep: need K >= 1 components");
  for (const auto* t : {&logw, &means, &var, &m0}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "gibbs_sweep: all tensors must have the dtype of x");
    TORCH_CHECK(t->device() == x.device(), "gibbs_sweep: all tensors must be on the device of x");
  }
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "gibbs_sweep: float32 or float64 expected");
  TORCH_CHECK(alpha > 0 && kappa0 > 0 && a0 > 0 && b0 > 0, "gibbs_sweep: alpha, kappa0, a0, b0 must be positive");
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous(), lc = logw.contiguous(), mc = means.contiguous(), vc = var.contiguous(), m0c = m0.contiguous();
  auto z = at::empty({B, N}, x.options().dtype(at::kInt));
  auto lo = at::empty_like(lc), mo = at::empty_like(mc), vo = at::empty_like(vc);
  const int64_t xbs = x.size(0) == 1 ? 0 : N * D;
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gibbs_sweep_cuda", [&] {
    err = launch_gibbs_sweep<scalar_t>(xc.data_ptr<scalar_t>(), xbs, lc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(),
                                       vc.data_ptr<scalar_t>(), m0c.data_ptr<scalar_t>(), z.data_ptr<int32_t>(),
                                       lo.data_ptr<scalar_t>(), mo.data_ptr<scalar_t>(), vo.data_ptr<scalar_t>(), B, N, K, D, alpha,
                                       kappa0, a0, b0, static_cast<uint64_t>(seed), static_cast<uint32_t>(step),
                                       at::cuda::getCurrentCUDAStream().stream());
  });
  TORCH_CHECK(err == cudaSuccess, "gibbs_sweep: CUDA launch failed: ", cudaGetErrorString(err));
  return {z, lo, mo, vo};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) { m.impl("gibbs_sweep", &gmmkernels::gibbs_sweep_cuda); }
