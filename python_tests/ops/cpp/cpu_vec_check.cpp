// Checks of csrc/include/gmmkernels/cpu_vec.h at the vector width of the flags it is compiled with (run by
// python_tests/ops/test_cpu_vec.py): the horizontal sum and maximum, the L x L transpose, the lane rotation, the
// widening to double and the vector exp against std::exp. Prints one FAIL line per failed check and exits non-zero if
// any failed.
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>

#include "gmmkernels/cpu_vec.h"

using namespace gmmkernels::cpu;

static int failures = 0;
#define CHECK(cond, ...)                    \
  do {                                      \
    if (!(cond)) {                          \
      std::printf("FAIL %s: ", #cond);      \
      std::printf(__VA_ARGS__);             \
      std::printf("\n");                    \
      ++failures;                           \
    }                                       \
  } while (0)

template <typename T>
void check_dtype(const char* name) {
  typedef typename VecOf<T>::V V;
  constexpr int L = sizeof(V) / sizeof(T);
  static_assert(sizeof(V) == kVecBytes, "one register of the target");
  static_assert(sizeof(typename VecOf<T>::W) == L * sizeof(double), "W: the lanes widened to double");
  std::mt19937_64 gen(7);
  std::uniform_real_distribution<double> u(-3.0, 3.0);
  // horizontal sum: exact on small integers; the same value in every lane; close to the sum for random values
  V v;
  for (int j = 0; j < L; ++j) v[j] = T(j + 1);
  V s = hsum_all(v);
  for (int j = 0; j < L; ++j) CHECK(s[j] == T(L * (L + 1) / 2), "%s lane %d: %g", name, j, double(s[j]));
  for (int rep = 0; rep < 100; ++rep) {
    double ref = 0;
    for (int j = 0; j < L; ++j) {
      v[j] = T(u(gen));
      ref += double(v[j]);
    }
    s = hsum_all(v);
    for (int j = 0; j < L; ++j) CHECK(s[j] == s[0], "%s hsum lanes differ", name);
    CHECK(std::fabs(double(s[0]) - ref) <= 8 * L * std::numeric_limits<T>::epsilon() * 3, "%s hsum %g vs %g", name,
          double(s[0]), ref);
    // maximum: the largest lane wherever it is, in every lane; -inf lanes too
    int at = rep % L;
    double mx = -1e30;
    for (int j = 0; j < L; ++j) mx = std::max(mx, double(v[j]));
    v[at] = T(mx + 1);
    V m = hmax_all(v);
    for (int j = 0; j < L; ++j) CHECK(m[j] == v[at], "%s hmax lane %d", name, j);
    for (int j = 0; j < L; ++j) v[j] = j == at ? T(-1) : -std::numeric_limits<T>::infinity();
    m = hmax_all(v);
    for (int j = 0; j < L; ++j) CHECK(m[j] == T(-1), "%s hmax with -inf lanes", name);
  }
  // transpose of an L x L block
  V a[L];
  for (int i = 0; i < L; ++i)
    for (int j = 0; j < L; ++j) a[i][j] = T(i * L + j);
  transpose_block<T>(a);
  for (int i = 0; i < L; ++i)
    for (int j = 0; j < L; ++j) CHECK(a[i][j] == T(j * L + i), "%s transpose [%d][%d]", name, i, j);
  // rotation by S lanes (lane j takes lane (j + S) mod L), S = 0, 1, L/2
  for (int j = 0; j < L; ++j) v[j] = T(j + 1);
  const V r0 = rotate_lanes<0>(v), r1 = rotate_lanes<1>(v), rh = rotate_lanes<L / 2>(v);
  for (int j = 0; j < L; ++j) {
    CHECK(r0[j] == T(j + 1), "%s rotate 0 lane %d", name, j);
    CHECK(r1[j] == T((j + 1) % L + 1), "%s rotate 1 lane %d", name, j);
    CHECK(rh[j] == T((j + L / 2) % L + 1), "%s rotate L/2 lane %d", name, j);
  }
  // widened to double vectors of the register width, lanes in order, each the exact value
  typedef VecOf<double>::V Vd;
  constexpr int Ld = sizeof(Vd) / sizeof(double), P = kDoubleParts<V>;
  static_assert(P * Ld == L, "the parts hold the L lanes");
  for (int j = 0; j < L; ++j) v[j] = T(u(gen));
  Vd parts[P];
  widen_parts(v, parts);
  for (int j = 0; j < L; ++j) CHECK(parts[j / Ld][j % Ld] == double(v[j]), "%s widen_parts lane %d", name, j);
  // exp: within 4 ulp of std::exp over its range, 0 below the lower clamp and at -inf, finite above, NaN kept
  const double lo = sizeof(T) == 4 ? -87.0 : -708.0, hi = sizeof(T) == 4 ? 88.0 : 709.0;
  double worst = 0;
  for (int rep = 0; rep < 2000; ++rep) {
    for (int j = 0; j < L; ++j) v[j] = T(lo + (hi - lo) * ((rep * L + j) % 4001) / 4000.0);
    const V e = vexp(v);
    const V en = vexp<true>(v);
    for (int j = 0; j < L; ++j) {
      const T ref = std::exp(v[j]);
      const double rel = std::fabs(double(e[j]) - double(ref)) / double(ref);
      worst = std::max(worst, rel);
      if (v[j] <= T(0)) CHECK(en[j] == e[j], "%s vexp<true> differs at %g", name, double(v[j]));
    }
  }
  CHECK(worst <= 4 * std::numeric_limits<T>::epsilon(), "%s vexp worst relative error %g", name, worst);
  // vexp_n: four vectors at once (their steps interleaved), each the same bits as vexp of it, special values included
  for (int rep = 0; rep < 500; ++rep) {
    V g[4], one[4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < L; ++j) {
        const int q = (rep * 4 * L + i * L + j) % 4003;
        g[i][j] = q == 4002 ? std::numeric_limits<T>::quiet_NaN()
                  : q == 4001 ? -std::numeric_limits<T>::infinity()
                              : T(lo - 10 + (hi - lo + 20) * q / 4000.0);
      }
    for (int i = 0; i < 4; ++i) one[i] = vexp(g[i]);
    vexp_n(g);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < L; ++j)
        CHECK(std::memcmp(&g[i][j], &one[i][j], sizeof(T)) == 0, "%s vexp_n differs from vexp in vector %d", name, i);
  }
  const T special[4] = {-std::numeric_limits<T>::infinity(), T(lo - 5), std::numeric_limits<T>::quiet_NaN(),
                        T(hi + 100)};
  for (int j = 0; j < L; ++j) v[j] = special[j % 4];
  const V e = vexp(v);
  for (int j = 0; j < L; ++j) {
    if (j % 4 < 2) CHECK(e[j] == T(0), "%s vexp(%g) = %g", name, double(v[j]), double(e[j]));
    if (j % 4 == 2) CHECK(e[j] != e[j], "%s vexp(NaN) = %g", name, double(e[j]));
    if (j % 4 == 3) CHECK(std::isfinite(e[j]) && e[j] > T(1e30), "%s vexp(%g) = %g", name, double(v[j]), double(e[j]));
  }
}

int main() {
  check_dtype<float>("float");
  check_dtype<double>("double");
  std::printf("vector_bytes %d registers %d failures %d\n", kVecBytes, kVecRegs, failures);
  return failures != 0;
}
