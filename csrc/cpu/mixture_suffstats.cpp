// mixture_suffstats on CPU: the M-step sufficient statistics of a batch of Gaussian mixtures,
//   nk[b,k] = sum_n r[b,n,k],  sx[b,k,:] = sum_n r[b,n,k] x[b,n,:],
//   sxx[b,k,:] = sum_n r[b,n,k] x[b,n,:]^2 (full=false)  or  sxx[b,k,:,:] = sum_n r[b,n,k] x x^T (full=true).
// Deterministic: each (b, k) is summed by one thread in the order n = 0..N-1, in double for float inputs.
// x may have batch size 1 (one data set shared by all B mixtures).
#include <ATen/Parallel.h>
#include <torch/all.h>
#include <torch/library.h>

#include <vector>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/mixture_suffstats_checks.h"

namespace gmmkernels {
namespace {

template <typename scalar_t>
void suffstats_impl(const scalar_t* x, const scalar_t* r, scalar_t* nk, scalar_t* sx, scalar_t* sxx, int64_t B, int64_t N,
                    int64_t K, int64_t D, int64_t x_bstride, bool full) {
  using acc_t = double;
  at::parallel_for(0, B * K, 1, [&](int64_t begin, int64_t end) {
    const int64_t ss = full ? D * D : D;
    std::vector<acc_t> a1(D), a2(ss);
    for (int64_t bk = begin; bk < end; ++bk) {
      const int64_t b = bk / K, k = bk % K;
      const scalar_t* xb = x + b * x_bstride;
      const scalar_t* rb = r + b * N * K + k;
      std::fill(a1.begin(), a1.end(), 0.0);
      std::fill(a2.begin(), a2.end(), 0.0);
      acc_t a0 = 0;
      for (int64_t n = 0; n < N; ++n) {
        const acc_t w = static_cast<acc_t>(rb[n * K]);
        if (w == 0) continue;
        const scalar_t* xn = xb + n * D;
        a0 += w;
        if (!full) {
          for (int64_t d = 0; d < D; ++d) {
            const acc_t v = static_cast<acc_t>(xn[d]);
            const acc_t wv = w * v;
            a1[d] += wv;
            a2[d] += wv * v;
          }
        } else {
          for (int64_t i = 0; i < D; ++i) {
            const acc_t wv = w * static_cast<acc_t>(xn[i]);
            a1[i] += wv;
            acc_t* row = a2.data() + i * D;
            for (int64_t j = 0; j <= i; ++j) row[j] += wv * static_cast<acc_t>(xn[j]);
          }
        }
      }
      nk[bk] = static_cast<scalar_t>(a0);
      for (int64_t d = 0; d < D; ++d) sx[bk * D + d] = static_cast<scalar_t>(a1[d]);
      if (!full) {
        for (int64_t d = 0; d < D; ++d) sxx[bk * D + d] = static_cast<scalar_t>(a2[d]);
      } else {
        scalar_t* o = sxx + bk * D * D;
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j <= i; ++j) {
            o[i * D + j] = static_cast<scalar_t>(a2[i * D + j]);
            o[j * D + i] = static_cast<scalar_t>(a2[i * D + j]);
          }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_suffstats_cpu(const at::Tensor& x, const at::Tensor& resp, bool full) {
  const auto s = mixture_suffstats::check_inputs(x, resp);
  TORCH_CHECK(x.device().is_cpu() && resp.device().is_cpu(), "mixture_suffstats: CPU tensors expected");
  const int64_t B = s.B, N = s.N, K = s.K, D = s.D;
  auto xc = x.contiguous();
  auto rc = resp.contiguous();
  auto nk = at::empty({B, K}, x.options());
  auto sx = at::empty({B, K, D}, x.options());
  auto sxx = full ? at::empty({B, K, D, D}, x.options()) : at::empty({B, K, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_suffstats_cpu", [&] {
    suffstats_impl<scalar_t>(xc.data_ptr<scalar_t>(), rc.data_ptr<scalar_t>(), nk.data_ptr<scalar_t>(), sx.data_ptr<scalar_t>(),
                             sxx.data_ptr<scalar_t>(), B, N, K, D, batch_stride(xc), full);
  });
  return {nk, sx, sxx};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) { m.impl("mixture_suffstats", &gmmkernels::mixture_suffstats_cpu); }
