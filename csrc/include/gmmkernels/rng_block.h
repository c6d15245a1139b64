// Counter-based normals for a run of consecutive stream indices, written so that the compiler vectorises them on CPU:
// the Philox4x32-10 rounds run over a block of lanes, and Box-Muller uses a polynomial log and cos instead of libm
// calls. normals_block(seed, i0, step, tag, n, z) gives z[l] = the first normal of rng::Stream(seed, i0 + l, step, tag)
// (Stream::normal(): u1 = word x, u2 = word y of the first Philox block), so CPU loops that call it draw the same
// numbers as the scalar Stream on every backend, up to the rounding of log and cos (a few ulp, float64).
//
// log: u = 2^e m with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716, series to
//      s^21 (next term < 3e-18 relative).
// cos(2 pi u): u = q / 4 + r with q = round(4 u), |r| <= 1/8, a = 2 pi r in [-pi/4, pi/4]; Taylor series of cos to
//      a^16 and of sin to a^17 (next terms < 3e-18); cos(a + q pi / 2) picks +-cos a or +-sin a by q mod 4.
// The lane loops carry `omp simd` and need -fno-math-errno for the sqrt (setup.py passes both); 16 normals cost about
// a quarter of 16 scalar Stream::normal() calls with AVX-512. Host only (CPU kernels); the CUDA kernels use rng::Stream
// with the device's log / cos.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gmmkernels/rng.h"

namespace gmmkernels {
namespace rng {

constexpr int kBlock = 16;

inline double log_unit(double u) {  // u in (0, 1], a normal double
  uint64_t b;
  std::memcpy(&b, &u, sizeof b);
  double e = static_cast<double>(static_cast<int64_t>((b >> 52) & 0x7FF) - 1023);
  const uint64_t mb = (b & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;
  double m;
  std::memcpy(&m, &mb, sizeof m);  // [1, 2)
  const bool big = m > 1.4142135623730951;
  m = big ? 0.5 * m : m;
  e = big ? e + 1.0 : e;
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double p = 1.0 / 21.0;
  p = p * s2 + 1.0 / 19.0;
  p = p * s2 + 1.0 / 17.0;
  p = p * s2 + 1.0 / 15.0;
  p = p * s2 + 1.0 / 13.0;
  p = p * s2 + 1.0 / 11.0;
  p = p * s2 + 1.0 / 9.0;
  p = p * s2 + 1.0 / 7.0;
  p = p * s2 + 1.0 / 5.0;
  p = p * s2 + 1.0 / 3.0;
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;  // ln 2 = hi + lo
  return e * ln2_hi + (2.0 * s + (2.0 * s * s2 * p + e * ln2_lo));
}

inline double cos_2pi(double u) {  // u in [0, 1]
  const double q = static_cast<double>(static_cast<int64_t>(4.0 * u + 0.5));  // round(4 u) in 0..4 (u >= 0)
  const double a = (u - 0.25 * q) * 6.283185307179586;  // |a| <= pi/4; u - q/4 is exact
  const double a2 = a * a;
  double c = 1.0 / 20922789888000.0;  // 1/16!
  c = c * a2 - 1.0 / 87178291200.0;
  c = c * a2 + 1.0 / 479001600.0;
  c = c * a2 - 1.0 / 3628800.0;
  c = c * a2 + 1.0 / 40320.0;
  c = c * a2 - 1.0 / 720.0;
  c = c * a2 + 1.0 / 24.0;
  c = c * a2 - 0.5;
  c = c * a2 + 1.0;
  double s = 1.0 / 355687428096000.0;  // 1/17!
  s = s * a2 - 1.0 / 1307674368000.0;
  s = s * a2 + 1.0 / 6227020800.0;
  s = s * a2 - 1.0 / 39916800.0;
  s = s * a2 + 1.0 / 362880.0;
  s = s * a2 - 1.0 / 5040.0;
  s = s * a2 + 1.0 / 120.0;
  s = s * a2 - 1.0 / 6.0;
  s = a + a * a2 * s;
  // cos(a + q pi/2), q in {0, ..., 4}: sin for odd q, negative for q = 1, 2 (selects, no integer lanes)
  const double r = (q == 1.0 || q == 3.0) ? s : c;
  return (q == 1.0 || q == 2.0) ? -r : r;
}

// x[l], y[l] = the first two words of Stream(seed, i0 + l, step, tag)'s first Philox block, l < kBlock.
inline void philox_words_block(uint64_t seed, uint64_t i0, uint32_t step, uint32_t tag, uint32_t* x, uint32_t* y) {
  uint32_t c[kBlock], w[kBlock];
  for (int l = 0; l < kBlock; ++l) {
    const uint64_t idx = i0 + static_cast<uint64_t>(l);
    x[l] = static_cast<uint32_t>(idx);
    y[l] = static_cast<uint32_t>(idx >> 32);
    c[l] = step;
    w[l] = tag << 16;  // attempt 0
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
#pragma omp simd
    for (int l = 0; l < kBlock; ++l) {
      // high and low halves as separate expressions: the high-part multiply pattern vectorises
      const uint32_t hi0 = static_cast<uint32_t>((static_cast<uint64_t>(0xD2511F53u) * x[l]) >> 32);
      const uint32_t hi1 = static_cast<uint32_t>((static_cast<uint64_t>(0xCD9E8D57u) * c[l]) >> 32);
      const uint32_t lo0 = 0xD2511F53u * x[l], lo1 = 0xCD9E8D57u * c[l];
      x[l] = hi1 ^ y[l] ^ k0;
      y[l] = lo1;
      c[l] = hi0 ^ w[l] ^ k1;
      w[l] = lo0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

inline double u01_lane(uint32_t v) { return (static_cast<double>(static_cast<int64_t>(v)) + 0.5) * (1.0 / 4294967296.0); }

// z[0..n) = first normal of Stream(seed, i0 + l, step, tag) (Stream::normal()), n <= kBlock.
inline void normals_block(uint64_t seed, uint64_t i0, uint32_t step, uint32_t tag, int n, double* z) {
  uint32_t x[kBlock], y[kBlock];
  philox_words_block(seed, i0, step, tag, x, y);
  double out[kBlock];
#pragma omp simd
  for (int l = 0; l < kBlock; ++l) out[l] = std::sqrt(-2.0 * log_unit(u01_lane(x[l]))) * cos_2pi(u01_lane(y[l]));
  for (int l = 0; l < n; ++l) z[l] = out[l];
}

// u[0..n) = first uniform of Stream(seed, i0 + l, step, tag) (Stream::uniform()), n <= kBlock.
inline void uniforms_block(uint64_t seed, uint64_t i0, uint32_t step, uint32_t tag, int n, double* u) {
  uint32_t x[kBlock], y[kBlock];
  philox_words_block(seed, i0, step, tag, x, y);
  for (int l = 0; l < n; ++l) u[l] = u01_lane(x[l]);
}

}  // namespace rng
}  // namespace gmmkernels
