// GMS per-element two-component fit and fused sampling step on CPU (math in csrc/include/gmmkernels/gms_fit.h).
//   gms_fit:  closed form (double) or the official 70-iteration Adan solver, elementwise over any shape.
//   gms_step: moments from (x_t, e1, e2, e3) with the official clamps -> fit -> component -> x_s.
// The Adan solver runs blocks of kBlock elements with the iteration loop outside, so the element loop vectorises; the
// step uses it too (moments of a block, one block solve, then the draws), and draws its random numbers 16 at a time.
#include <ATen/Parallel.h>
#include <torch/all.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "gmmkernels/aten_utils.h"
#include "gmmkernels/gms_fit.h"
#include "gmmkernels/gms_fit_checks.h"
#include "gmmkernels/rng_block.h"

namespace gmmkernels {
namespace {

constexpr int64_t kBlock = 64;

std::vector<double> adan_schedule(int64_t iters, double lr) {
  std::vector<double> s(3 * iters);
  gms_fit::AdanSchedule sch;
  for (int64_t k = 0; k < iters; ++k) {
    sch.next(lr);
    s[3 * k] = sch.c1;
    s[3 * k + 1] = sch.c2;
    s[3 * k + 2] = sch.s3;
  }
  return s;
}

// The official Adan solve for nb <= kBlock elements, iteration loop outside, element loop vectorised.
template <typename T>
void adan_block(const T* M1, const T* V, const T* M3, int64_t nb, T w, T scale, const std::vector<double>& sched, T* o1, T* o2,
                T* ov) {
  T th0[kBlock], th1[kBlock], th2[kBlock], m0[kBlock], m1[kBlock], m2[kBlock], d0[kBlock], d1[kBlock], d2[kBlock], n0[kBlock],
      n1[kBlock], n2[kBlock], p0[kBlock], p1[kBlock], p2[kBlock], a[kBlock], b[kBlock], c[kBlock];
  for (int64_t j = 0; j < nb; ++j) {
    a[j] = M1[j];
    b[j] = V[j];
    c[j] = M3[j];
    th0[j] = a[j];
    th1[j] = a[j] - T(gms_fit::kMu2Offset);
    th2[j] = T(gms_fit::kBetaInit);
    m0[j] = m1[j] = m2[j] = d0[j] = d1[j] = d2[j] = n0[j] = n1[j] = n2[j] = T(0);
  }
  const int64_t iters = static_cast<int64_t>(sched.size() / 3);
  for (int64_t k = 0; k < iters; ++k) {
    const T c1 = static_cast<T>(sched[3 * k]), c2 = static_cast<T>(sched[3 * k + 1]), s3 = static_cast<T>(sched[3 * k + 2]);
    const bool first = k == 0;
#pragma omp simd
    for (int64_t j = 0; j < nb; ++j) {
      T g0, g1, g2;
      gms_fit::objective_grad<T>(w, a[j], b[j], c[j], th0[j], th1[j], th2[j], scale, &g0, &g1, &g2);
      if (first) {
        p0[j] = -g0;
        p1[j] = -g1;
        p2[j] = -g2;
      }
      gms_fit::adan_update<T>(th0[j], m0[j], d0[j], n0[j], p0[j], g0, c1, c2, s3);
      gms_fit::adan_update<T>(th1[j], m1[j], d1[j], n1[j], p1[j], g1, c1, c2, s3);
      gms_fit::adan_update<T>(th2[j], m2[j], d2[j], n2[j], p2[j], g2, c1, c2, s3);
    }
  }
  const T lo = T(gms_fit::kBetaMin), hi = T(gms_fit::kBetaMax);
  for (int64_t j = 0; j < nb; ++j) {
    const T bc = th2[j] < lo ? lo : (th2[j] > hi ? hi : th2[j]);
    o1[j] = th0[j];
    o2[j] = th1[j];
    ov[j] = b[j] * bc;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gms_fit_cpu(const at::Tensor& mean, const at::Tensor& var, const at::Tensor& m3,
                                                           double weight, int64_t method, int64_t iters, double lr, double var_floor,
                                                           int64_t n_el) {
  gms_fit::check_fit_args(mean, var, m3, weight, method, iters, var_floor, n_el);
  auto M1 = mean.contiguous(), V = var.contiguous(), M3 = m3.contiguous();
  auto mu1 = at::empty_like(M1), mu2 = at::empty_like(M1), v = at::empty_like(M1);
  const int64_t n = M1.numel();
  if (n == 0) return {mu1, mu2, v};
  AT_DISPATCH_FLOATING_TYPES(M1.scalar_type(), "gms_fit_cpu", [&] {
    const scalar_t *pm = M1.data_ptr<scalar_t>(), *pv = V.data_ptr<scalar_t>(), *p3 = M3.data_ptr<scalar_t>();
    scalar_t *o1 = mu1.data_ptr<scalar_t>(), *o2 = mu2.data_ptr<scalar_t>(), *ov = v.data_ptr<scalar_t>();
    if (method == gms_fit::kClosed) {
      at::parallel_for(0, n, 4096, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const gms_fit::Fit f = gms_fit::closed_fit(pm[i], pv[i], p3[i], weight, var_floor);
          o1[i] = static_cast<scalar_t>(f.mu1);
          o2[i] = static_cast<scalar_t>(f.mu2);
          ov[i] = static_cast<scalar_t>(f.v);
        }
      });
    } else {
      const auto sched = adan_schedule(iters, lr);
      const scalar_t w = static_cast<scalar_t>(weight), scale = static_cast<scalar_t>(gms_fit::adan_scale(n_el, n));
      at::parallel_for(0, (n + kBlock - 1) / kBlock, 16, [&](int64_t lo, int64_t hi) {
        for (int64_t blk = lo; blk < hi; ++blk) {
          const int64_t s = blk * kBlock, nb = std::min(kBlock, n - s);
          adan_block<scalar_t>(pm + s, pv + s, p3 + s, nb, w, scale, sched, o1 + s, o2 + s, ov + s);
        }
      });
    }
  });
  return {mu1, mu2, v};
}

// The random numbers of the fused step for a run of elements, 16 at a time (rng_block.h): z from the element's
// stream (tag 7), u from the component stream (tag 6) of the element or, per image, one uniform per image.
struct StepRandom {
  const gms_fit::StepParams& P;
  uint64_t last_ci = ~uint64_t(0);
  double last_u = 0.0;
  explicit StepRandom(const gms_fit::StepParams& p) : P(p) {}
  void fill(int64_t i0, int64_t n, double* u, double* z) {
    for (int64_t t = 0; t < n; t += rng::kBlock) {
      const int nb = static_cast<int>(std::min<int64_t>(rng::kBlock, n - t));
      const uint64_t i = static_cast<uint64_t>(i0 + t);
      rng::normals_block(P.seed, i, P.offset, gms_fit::kTagNoise, nb, z + t);
      if (!P.per_image) {
        rng::uniforms_block(P.seed, i, P.offset, gms_fit::kTagComponent, nb, u + t);
        continue;
      }
      for (int l = 0; l < nb; ++l) {
        const uint64_t ci = gms_fit::component_index(i0 + t + l, P);
        if (ci != last_ci) {
          last_ci = ci;
          last_u = rng::Stream(P.seed, ci, P.offset, gms_fit::kTagComponent).uniform();
        }
        u[t + l] = last_u;
      }
    }
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gms_step_cpu(
    const at::Tensor& x_t, const at::Tensor& e1, const at::Tensor& e2, const at::Tensor& e3, double a_t, double sigma_t, double A,
    double B, double lam2, double weight, int64_t method, int64_t iters, double lr, double var_floor, int64_t n_el, bool per_image,
    double var_clip, int64_t seed, int64_t offset, bool with_params) {
  gms_fit::check_step_args(x_t, e1, e2, e3, weight, method, iters, var_floor, n_el, offset);
  auto X = x_t.contiguous(), E1 = e1.contiguous(), E2 = e2.contiguous(), E3 = e3.contiguous();
  auto out = at::empty_like(X);
  auto mu1 = optional_output(with_params, X.sizes(), X.options());
  auto mu2 = optional_output(with_params, X.sizes(), X.options());
  auto v = optional_output(with_params, X.sizes(), X.options());
  const int64_t n = X.numel();
  if (n == 0) return {out, mu1, mu2, v};
  const gms_fit::StepParams P = gms_fit::make_step_params(X, a_t, sigma_t, A, B, lam2, weight, method, iters, lr, var_floor,
                                                          n_el, per_image, var_clip, seed, offset);
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "gms_step_cpu", [&] {
    const scalar_t *px = X.data_ptr<scalar_t>(), *p1 = E1.data_ptr<scalar_t>(), *p2 = E2.data_ptr<scalar_t>(),
                   *p3 = E3.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    scalar_t* q1 = with_params ? mu1.data_ptr<scalar_t>() : nullptr;
    scalar_t* q2 = with_params ? mu2.data_ptr<scalar_t>() : nullptr;
    scalar_t* qv = with_params ? v.data_ptr<scalar_t>() : nullptr;
    const bool adan = P.method == gms_fit::kAdan;
    const auto sched = adan ? adan_schedule(P.iters, P.lr) : std::vector<double>();
    const scalar_t w = static_cast<scalar_t>(P.w), scale = static_cast<scalar_t>(P.scale);
    at::parallel_for(0, n, adan ? kBlock : 2048, [&](int64_t lo, int64_t hi) {
      StepRandom rnd(P);
      double u[kBlock], z[kBlock];
      scalar_t m1[kBlock], vv[kBlock], m3[kBlock], f1[kBlock], f2[kBlock], fv[kBlock];
      for (int64_t s = lo; s < hi; s += kBlock) {
        const int64_t nb = std::min(kBlock, hi - s);
        rnd.fill(s, nb, u, z);
        if (adan) {  // moments, then the vectorised Adan solve of the whole block, then the draws
          for (int64_t j = 0; j < nb; ++j) {
            double a, b, c;
            gms_fit::step_moments_nan(px[s + j], p1[s + j], p2[s + j], p3[s + j], P.coef, &a, &b, &c);
            m1[j] = static_cast<scalar_t>(a);
            vv[j] = static_cast<scalar_t>(b);
            m3[j] = static_cast<scalar_t>(c);
          }
          adan_block<scalar_t>(m1, vv, m3, nb, w, scale, sched, f1, f2, fv);
          for (int64_t j = 0; j < nb; ++j)
            po[s + j] = static_cast<scalar_t>(gms_fit::draw_from_fit(f1[j], f2[j], fv[j], P.w, u[j], z[j]));
        } else {
          for (int64_t j = 0; j < nb; ++j) {
            double a, b, c;
            po[s + j] = static_cast<scalar_t>(
                gms_fit::step_element_draw<scalar_t>(px[s + j], p1[s + j], p2[s + j], p3[s + j], P, u[j], z[j], &a, &b,
                                                     &c));
            f1[j] = static_cast<scalar_t>(a);
            f2[j] = static_cast<scalar_t>(b);
            fv[j] = static_cast<scalar_t>(c);
          }
        }
        if (q1) {
          for (int64_t j = 0; j < nb; ++j) {
            q1[s + j] = f1[j];
            q2[s + j] = f2[j];
            qv[s + j] = fv[j];
          }
        }
      }
    });
  });
  return {out, mu1, mu2, v};
}

}  // namespace
}  // namespace gmmkernels

TORCH_LIBRARY_IMPL(gmmkernels, CPU, m) {
  m.impl("gms_fit", &gmmkernels::gms_fit_cpu);
  m.impl("gms_step", &gmmkernels::gms_step_cpu);
}
