// Counter-based random numbers shared by the CPU and CUDA kernels: Philox4x32-10 (Salmon, Moraes, Dror,
// Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11). A draw is a pure function of
// (seed, counter), so a kernel gets the same stream on every backend, thread layout and run.
//
// Counter layout used across gmmkernels: c0 = element index (low 32 bits), c1 = element index (high bits)
// c2 = step (sweep / iteration), c3 = purpose tag << 16 | attempt. Each call yields four 32-bit words.
#pragma once
#include <cmath>
#include <cstdint>

#include "gmmkernels/common.h"

namespace gmmkernels {
namespace rng {

struct U4 {
  uint32_t x, y, z, w;
};

GMMK_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

GMMK_HD U4 philox4x32_10(U4 c, uint64_t seed) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo(0xD2511F53u, c.x, &hi0);
    const uint32_t lo1 = mulhilo(0xCD9E8D57u, c.z, &hi1);
    c = U4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// Uniform in (0, 1): never 0 or 1, so log(u) and log(1-u) are finite.
GMMK_HD double u01(uint32_t v) { return (static_cast<double>(v) + 0.5) * (1.0 / 4294967296.0); }

// A stream of uniforms / normals at a fixed (seed, index, step, tag); each refill advances the attempt word.
struct Stream {
  uint64_t seed;
  uint64_t index;
  uint32_t step;
  uint32_t tag;
  uint32_t attempt;
  U4 buf;
  int left;

  GMMK_HD Stream(uint64_t seed_, uint64_t index_, uint32_t step_, uint32_t tag_)
      : seed(seed_), index(index_), step(step_), tag(tag_), attempt(0), buf{0, 0, 0, 0}, left(0) {}

  GMMK_HD uint32_t next_u32() {
    if (left == 0) {
      U4 c{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), step, (tag << 16) | (attempt & 0xFFFFu)};
      buf = philox4x32_10(c, seed);
      ++attempt;
      left = 4;
    }
    --left;
    return left == 3 ? buf.x : left == 2 ? buf.y : left == 1 ? buf.z : buf.w;
  }
  GMMK_HD double uniform() { return u01(next_u32()); }
  // Standard normal by Box-Muller (one of the pair is used: simple, branch-free, same on every backend).
  GMMK_HD double normal() {
    const double u1 = uniform(), u2 = uniform();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
  }
  // Gamma(shape, 1) by Marsaglia-Tsang (ACM TOMS 26(3), 2000); shape < 1 by Gamma(shape+1) * U^(1/shape).
  GMMK_HD double gamma(double shape) {
    double boost = 1.0;
    if (shape < 1.0) {
      boost = pow(uniform(), 1.0 / shape);
      shape += 1.0;
    }
    const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (int it = 0; it < 256; ++it) {
      double z, v;
      do {
        z = normal();
        v = 1.0 + c * z;
      } while (v <= 0.0);
      v = v * v * v;
      const double u = uniform();
      if (log(u) < 0.5 * z * z + d - d * v + d * log(v)) return d * v * boost;
    }
    return d * boost;  // unreachable in practice (acceptance rate > 0.95)
  }
};

}  // namespace rng
}  // namespace gmmkernels
