// CUDA host code of gmmkernels::mixture_stats / mixture_stats_backward: argument checks, allocation, device guard,
// stream, dtype dispatch. The kernels live in mixture_stats_kernels.cu (plain launchers, no torch headers there).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/all.h>
#include <torch/library.h>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cuda_utils.h"
#include "gmmkernels/mixture_stats_checks.h"
#include "gmmkernels/mixture_stats_launch.h"

namespace gmmkernels {
namespace {

using namespace gmmkernels::mixture_stats;

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_stats_cuda(const at::Tensor& x, const at::Tensor& means,
                                                                  const at::Tensor& prec, const at::Tensor& logc,
                                                                  bool full, bool with_score, bool with_resp) {
  const Sizes s = check_inputs(x, means, prec, logc, full, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous(), mc = means.contiguous(), pc = prec.contiguous(), cc = logc.contiguous();
  auto logp = at::empty({s.B, s.N}, x.options());
  auto score = optional_output(with_score, {s.B, s.N, s.D}, x.options());
  auto resp = optional_output(with_resp, {s.B, s.N, s.K}, x.options());
  if (s.B == 0 || s.N == 0) return {logp, score, resp};
  const int64_t wsn = mixture_stats_forward_workspace(s.B, s.N, s.K, s.D, full, int(x.element_size()));
  auto ws = at::empty({wsn}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_stats_cuda", [&] {
    check_launch(launch_mixture_stats_forward<scalar_t>(
                     xc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                     logp.data_ptr<scalar_t>(), with_score ? score.data_ptr<scalar_t>() : nullptr,
                     with_resp ? resp.data_ptr<scalar_t>() : nullptr, s.B, s.N, s.K, s.D, full,
                     wsn > 0 ? ws.data_ptr<scalar_t>() : nullptr, current_stream()),
                 "mixture_stats");
  });
  return {logp, score, resp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_stats_backward_cuda(
    const at::Tensor& grad_logp, const c10::optional<at::Tensor>& grad_score, const c10::optional<at::Tensor>& grad_resp,
    const at::Tensor& x, const at::Tensor& means, const at::Tensor& prec, const at::Tensor& logc, const at::Tensor& logp,
    bool full) {
  const Sizes s = check_inputs(x, means, prec, logc, full, c10::DeviceType::CUDA);
  check_backward_inputs(s, x, grad_logp, grad_score, grad_resp, logp);
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous(), mc = means.contiguous(), pc = prec.contiguous(), cc = logc.contiguous();
  auto gc = grad_logp.contiguous(), lc = logp.contiguous();
  auto Gc = optional_contiguous(grad_score), Hc = optional_contiguous(grad_resp);
  auto gx = at::empty_like(xc), gm = at::empty_like(mc), gp = at::empty_like(pc), gl = at::empty_like(cc);
  if (s.B == 0) return {gx, gm, gp, gl};
  const int64_t wsn = mixture_stats_backward_workspace(s.B, s.N, s.K, s.D, full, int(x.element_size()));
  auto ws = at::zeros({wsn}, x.options());  // the partial slots must start at zero
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_stats_backward_cuda", [&] {
    check_launch(launch_mixture_stats_backward<scalar_t>(
                     gc.data_ptr<scalar_t>(), optional_data<scalar_t>(Gc), optional_data<scalar_t>(Hc),
                     xc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                     lc.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), gm.data_ptr<scalar_t>(), gp.data_ptr<scalar_t>(),
                     gl.data_ptr<scalar_t>(), s.B, s.N, s.K, s.D, full, wsn > 0 ? ws.data_ptr<scalar_t>() : nullptr,
                     current_stream()),
                 "mixture_stats");
  });
  return {gx, gm, gp, gl};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CUDA, m) {
  m.impl("mixture_stats", &gmmkernels::mixture_stats_cuda);
  m.impl("mixture_stats_backward", &gmmkernels::mixture_stats_backward_cuda);
}
