// mixture_suffstats on CPU: the M-step sufficient statistics of a batch of Gaussian mixtures,
//   nk[b,k] = sum_n r[b,n,k],  sx[b,k,:] = sum_n r[b,n,k] x[b,n,:],
//   sxx[b,k,:] = sum_n r[b,n,k] x[b,n,:]^2 (full=false)  or  sxx[b,k,:,:] = sum_n r[b,n,k] x x^T (full=true),
// on the tiles of mixture_em_stats (csrc/include/gmmkernels/cpu_em_tiles.h): each tile of rows copies its
// responsibilities into the component lanes and goes through the same features and register-blocked statistics
// product. Deterministic and independent of the thread count: the rows are cut into chunks that depend on N only,
// summed tile by tile, and the chunk totals (in double) are added in chunk order. x may have batch size 1 (one data
// set shared by all B mixtures).
#include <ATen/Parallel.h>
#include <torch/all.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/cpu_em_tiles.h"
#include "gmmkernels/mixture_suffstats_checks.h"

namespace gmmkernels {
namespace {

using namespace gmmkernels::cpu;

template <typename T, bool FULL>
void suffstats_impl(const Shape<T>& s, const T* x, int64_t x_bstride, const T* r, double* partial) {
  typedef typename VecOf<T>::V V;
  constexpr int64_t L = Shape<T>::L;
  const int64_t N = s.N, K = s.K, KV = s.KV;
  run_tiles<T, FULL>(s, x, x_bstride, partial,
                     [&](int64_t b, int64_t n0, int64_t nr, const T*, V* Lr, V* nkv, TileScalars&) {
    for (int64_t n = 0; n < nr; ++n) {
      const T* src = r + (b * N + n0 + n) * K;
      T* dst = reinterpret_cast<T*>(Lr + n * KV);
      std::copy(src, src + K, dst);
      std::fill(dst + K, dst + KV * L, T(0));
      for (int64_t kv = 0; kv < KV; ++kv) nkv[kv] += Lr[n * KV + kv];
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_suffstats_cpu(const at::Tensor& x, const at::Tensor& resp,
                                                                      bool full) {
  const auto s = mixture_suffstats::check_inputs(x, resp);
  TORCH_CHECK(x.device().is_cpu() && resp.device().is_cpu(), "mixture_suffstats: CPU tensors expected");
  const int64_t B = s.B, N = s.N, K = s.K, D = s.D;
  auto xc = x.contiguous();
  auto rc = resp.contiguous();
  auto nk = at::empty({B, K}, x.options());
  auto sx = at::empty({B, K, D}, x.options());
  auto sxx = full ? at::empty({B, K, D, D}, x.options()) : at::empty({B, K, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixture_suffstats_cpu", [&] {
    const Shape<scalar_t> sh(B, N, K, D, full);
    // every chunk writes all of its partial sums: no zero fill
    std::unique_ptr<double[]> partial(new double[std::max<int64_t>(1, B * sh.nch * sh.partial_size())]);
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const scalar_t* rp = rc.const_data_ptr<scalar_t>();
    if (full)
      suffstats_impl<scalar_t, true>(sh, xp, batch_stride(xc), rp, partial.get());
    else
      suffstats_impl<scalar_t, false>(sh, xp, batch_stride(xc), rp, partial.get());
    reduce_partials<scalar_t>(sh, partial.get(), nullptr, nullptr, nk.data_ptr<scalar_t>(), sx.data_ptr<scalar_t>(),
                              sxx.data_ptr<scalar_t>());
  });
  return {nk, sx, sxx};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) { m.impl("mixture_suffstats", &gmmkernels::mixture_suffstats_cpu); }
