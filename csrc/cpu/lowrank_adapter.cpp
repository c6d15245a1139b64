// CPU kernels of gmmkernels::lowrank_adapter and lowrank_adapter_backward (the SMD hypernetwork adapter; see
// docs/kernels.md (lowrank_adapter)).
//
// Per pixel p and layer l = 1..L (c_l = softplus(s_l)):
//   alpha_l = u_l . r_{l-1},   r_l = alpha_l u_l + c_l r_{l-1}          (= (u_l u_l^T + c_l I) r_{l-1})
// Backward for the upstream gradient g_L = grad_out, l = L..1:
//   beta_l = g_l . u_l
//   grad_u_l = alpha_l g_l + beta_l r_{l-1}
//   grad_c_l += g_l . r_{l-1}                     (summed over pixels; grad_s = softplus'(s) grad_c)
//   g_{l-1} = beta_l u_l + c_l g_l,               grad_r = g_0
// Nothing of size d x d is formed: O(L d) work and O(L d) scratch per pixel. The backward saves nothing from the
// forward: it replays r_0 .. r_{L-1} per pixel (L axpys and dots of length d) into a thread-local buffer.
// Per-pixel contributions to grad_c go to a [P, L] buffer reduced with at::sum (deterministic for any thread count).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "gmmkernels/lowrank_adapter.h"
#include "gmmkernels/lowrank_adapter_checks.h"

namespace gmmkernels {
namespace {

template <typename T>
inline T dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) acc += a[j] * b[j];
  return acc;
}

// y = a * x + b * y
template <typename T>
inline void axpby(T a, const T* __restrict__ x, T b, T* __restrict__ y, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] = a * x[j] + b * y[j];
}

constexpr int64_t kGrain = 64;  // pixels per parallel task
constexpr int64_t kPix = 4;     // pixels advanced together: four independent dot-product chains hide the FMA latency

// a[i] = u_i . x_i for kPix pixels (row strides su, sx)
template <typename T>
inline void dot4(const T* __restrict__ u, int64_t su, const T* __restrict__ x, int64_t sx, int64_t n, T* a) {
  const T *u0 = u, *u1 = u + su, *u2 = u + 2 * su, *u3 = u + 3 * su;
  const T *x0 = x, *x1 = x + sx, *x2 = x + 2 * sx, *x3 = x + 3 * sx;
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t j = 0; j < n; ++j) {
    s0 += u0[j] * x0[j];
    s1 += u1[j] * x1[j];
    s2 += u2[j] * x2[j];
    s3 += u3[j] * x3[j];
  }
  a[0] = s0;
  a[1] = s1;
  a[2] = s2;
  a[3] = s3;
}

template <typename T>
void forward_kernel(const T* r, const T* u, const T* c, T* out, int64_t P, int64_t L, int64_t d) {
  at::parallel_for(0, P, kGrain, [&](int64_t begin, int64_t end) {
    std::copy(r + begin * d, r + end * d, out + begin * d);
    int64_t p = begin;
    for (; p + kPix <= end; p += kPix) {
      T* x = out + p * d;
      const T* up = u + p * L * d;
      for (int64_t l = 0; l < L; ++l) {
        T a[kPix];
        dot4(up + l * d, L * d, x, d, d, a);
        for (int64_t i = 0; i < kPix; ++i) axpby(a[i], up + i * L * d + l * d, c[l], x + i * d, d);
      }
    }
    for (; p < end; ++p) {
      T* x = out + p * d;
      const T* up = u + p * L * d;
      for (int64_t l = 0; l < L; ++l) {
        const T* ul = up + l * d;
        axpby(dot(ul, x, d), ul, c[l], x, d);
      }
    }
  });
}

template <typename T>
void backward_kernel(const T* g_out, const T* r, const T* u, const T* c, T* grad_r, T* grad_u, T* gc_part, int64_t P,
                     int64_t L, int64_t d) {
  at::parallel_for(0, P, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<T> hist(static_cast<size_t>(L * d));  // r_0 .. r_{L-1} of one pixel
    std::vector<T> alpha(static_cast<size_t>(L));
    for (int64_t p = begin; p < end; ++p) {
      const T* up = u + p * L * d;
      // replay the forward
      if (L > 0) std::copy(r + p * d, r + (p + 1) * d, hist.data());
      for (int64_t l = 0; l < L; ++l) {
        const T* ul = up + l * d;
        const T* h = hist.data() + l * d;
        alpha[l] = dot(ul, h, d);
        if (l + 1 < L) {
          T* nx = hist.data() + (l + 1) * d;
          std::copy(h, h + d, nx);
          axpby(alpha[l], ul, c[l], nx, d);
        }
      }
      // reverse sweep; g lives in grad_r
      T* g = grad_r + p * d;
      std::copy(g_out + p * d, g_out + (p + 1) * d, g);
      T* gup = grad_u + p * L * d;
      for (int64_t l = L - 1; l >= 0; --l) {
        const T* ul = up + l * d;
        const T* h = hist.data() + l * d;
        const T beta = dot(g, ul, d);
        gc_part[p * L + l] = dot(g, h, d);
        T* gul = gup + l * d;
        const T a = alpha[l];
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) gul[j] = a * g[j] + beta * h[j];
        axpby(beta, ul, c[l], g, d);
      }
    }
  });
}

at::Tensor lowrank_adapter_cpu(const at::Tensor& r, const at::Tensor& u, const at::Tensor& s) {
  const auto z = lowrank_adapter::check_inputs(r, u, s, c10::DeviceType::CPU);
  auto rc = r.contiguous();
  auto uc = u.contiguous();
  auto c = lowrank_adapter::diag_coeff(s);
  auto out = at::empty({z.P, z.d}, r.options());
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "lowrank_adapter_cpu", [&] {
    forward_kernel<scalar_t>(rc.const_data_ptr<scalar_t>(), uc.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
                             out.mutable_data_ptr<scalar_t>(), z.P, z.L, z.d);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lowrank_adapter_backward_cpu(const at::Tensor& grad_out,
                                                                            const at::Tensor& r, const at::Tensor& u,
                                                                            const at::Tensor& s) {
  const auto z = lowrank_adapter::check_inputs(r, u, s, c10::DeviceType::CPU);
  lowrank_adapter::check_grad(z, grad_out, r);
  auto gc = grad_out.contiguous();
  auto rc = r.contiguous();
  auto uc = u.contiguous();
  auto c = lowrank_adapter::diag_coeff(s);
  auto grad_r = at::empty({z.P, z.d}, r.options());
  auto grad_u = at::empty({z.P, z.L, z.d}, r.options());
  auto gc_part = at::empty({z.P, z.L}, r.options());
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "lowrank_adapter_backward_cpu", [&] {
    backward_kernel<scalar_t>(gc.const_data_ptr<scalar_t>(), rc.const_data_ptr<scalar_t>(),
                              uc.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
                              grad_r.mutable_data_ptr<scalar_t>(), grad_u.mutable_data_ptr<scalar_t>(),
                              gc_part.mutable_data_ptr<scalar_t>(), z.P, z.L, z.d);
  });
  auto grad_s = lowrank_adapter::diag_coeff_backward(gc_part, s);
  return {grad_r, grad_u, grad_s};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) {
  m.impl("lowrank_adapter", &gmmkernels::lowrank_adapter_cpu);
  m.impl("lowrank_adapter_backward", &gmmkernels::lowrank_adapter_backward_cpu);
}
