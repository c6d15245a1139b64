// Portable SIMD helpers of the CPU kernels (GCC / Clang vector extensions; no torch header). A vector is one register
// of the widest vector unit the build targets: kVecBytes = 64 with AVX-512 (L = 16 float / 8 double lanes), 32 with
// AVX / AVX2 (8 / 4), 16 elsewhere (SSE2, NEON: 4 / 2); kVecRegs is the size of its register file, which sets the
// register blocks of the kernels. A vector type wider than the target's registers is not split into registers by gcc
// but kept on the stack and moved through it in 16-byte pieces (measured: 64-byte vectors on an AVX2 machine ran the
// EM pass 5x slower than 32-byte ones), so the width follows the target.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

// Vector types are passed between inlined helpers only; gcc warns about the ABI of those wider than 16 bytes.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace gmmkernels {
namespace cpu {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kVecRegs = 32;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
constexpr int kVecRegs = 16;
#elif defined(__aarch64__)
constexpr int kVecBytes = 16;
constexpr int kVecRegs = 32;
#else
constexpr int kVecBytes = 16;
constexpr int kVecRegs = 16;
#endif
// true where the register file holds 32 vectors (AVX-512, NEON): the register blocks sized for it; false: halved
constexpr bool kWideRegs = kVecRegs >= 32;

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float V __attribute__((vector_size(kVecBytes)));
  typedef uint32_t U __attribute__((vector_size(kVecBytes)));
  typedef double W __attribute__((vector_size(2 * kVecBytes)));  // the same L lanes widened to double
};
template <>
struct VecOf<double> {
  typedef double V __attribute__((vector_size(kVecBytes)));
  typedef uint64_t U __attribute__((vector_size(kVecBytes)));
  typedef double W __attribute__((vector_size(kVecBytes)));
};

// The lane type of a vector type V, its number of lanes, and the unsigned integer vector of the same shape (the
// type of a shuffle mask; V a float or double vector).
template <typename V>
using LaneOf = std::remove_reference_t<decltype(std::declval<V>()[0])>;
template <typename V>
constexpr std::size_t kLanes = sizeof(V) / sizeof(LaneOf<V>);
template <typename V>
using MaskOf = typename VecOf<LaneOf<V>>::U;

// Every lane = s, written as a full initializer list: the compiler emits one broadcast (from memory, or folded into
// the arithmetic, when s is loaded). The shorter V{} + s costs a scalar addition first (0 + s is not s when s = -0),
// and lane-by-lane inserts or a shuffle of lane 0 compile to a masked load plus a register broadcast.
template <typename V, typename S, std::size_t... I>
inline V splat_lanes(S s, std::index_sequence<I...>) {
  return V{((void)I, static_cast<LaneOf<V>>(s))...};
}
template <typename V, typename S>
inline V splat(S s) {
  return splat_lanes<V>(s, std::make_index_sequence<kLanes<V>>{});
}

// Holds v in a vector register from here on. In a register-blocked product (a block of sums, each operand loaded once
// and used by several fused multiply-adds), gcc may instead fold the operand's load into every instruction that uses
// it (a memory operand): one load per use instead of one per block. With two vector loads per cycle against two FMAs,
// the loads then bound the loop. The diag float64 statistics block of mixture_em_stats (4 x 2 sums: 8 FMAs and 12
// loads per row) ran at 0.52 of the FMA peak in a standalone loop on an AVX2 AMD EPYC Zen 3, and at 0.78 with its
// two operand vectors held (6 loads). An empty asm that takes v in a register and "may change" it leaves the compiler
// no copy in memory to fold.
template <typename V>
inline void in_register(V& v) {
#if defined(__AVX512F__)
  __asm__("" : "+v"(v));
#elif defined(__SSE2__)
  __asm__("" : "+x"(v));
#elif defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  (void)v;
#endif
}

#if defined(__AVX512F__)
// Full-mask forms of max, min and permutes: gcc 12's unmasked intrinsics pass an "undefined" vector that
// -Wmaybe-uninitialized reports; with every lane selected the merge source is never read and the code is the same.
inline __m512d max_pd(__m512d a, __m512d b) { return _mm512_mask_max_pd(a, (__mmask8)-1, a, b); }
inline __m512d min_pd(__m512d a, __m512d b) { return _mm512_mask_min_pd(a, (__mmask8)-1, a, b); }
inline __m512 max_ps(__m512 a, __m512 b) { return _mm512_mask_max_ps(a, (__mmask16)-1, a, b); }
inline __m512 min_ps(__m512 a, __m512 b) { return _mm512_mask_min_ps(a, (__mmask16)-1, a, b); }
inline __m512 permute16_ps(__m512i idx, __m512 tab) {
  return _mm512_mask_permutexvar_ps(tab, (__mmask16)-1, idx, tab);
}
#endif

// max(a, b) per lane; a lane where b is NaN keeps a (so NaNs never become a running maximum started from -inf).
template <typename V>
inline V vmax(V a, V b) {
  return b > a ? b : a;
}
// The same as one instruction in x86 builds: vmaxps / vmaxpd return their second operand unless the first is greater
// (so where either is NaN, and for two zeros), which is b > a ? b : a with the operands swapped. For the expression
// above the compiler emits a compare and a blend.
#if defined(__AVX512F__)
inline VecOf<float>::V vmax(VecOf<float>::V a, VecOf<float>::V b) { return max_ps(b, a); }
inline VecOf<double>::V vmax(VecOf<double>::V a, VecOf<double>::V b) { return max_pd(b, a); }
#elif defined(__AVX__)
inline VecOf<float>::V vmax(VecOf<float>::V a, VecOf<float>::V b) { return _mm256_max_ps(b, a); }
inline VecOf<double>::V vmax(VecOf<double>::V a, VecOf<double>::V b) { return _mm256_max_pd(b, a); }
#elif defined(__SSE2__)
inline VecOf<float>::V vmax(VecOf<float>::V a, VecOf<float>::V b) { return _mm_max_ps(b, a); }
inline VecOf<double>::V vmax(VecOf<double>::V a, VecOf<double>::V b) { return _mm_max_pd(b, a); }
#endif

// Vector exp. The contract of every version: about 1-2 ulp; arguments clamped to [-708, 709] (float: [-87, 88]), with
// exp(x) = 0 below the lower clamp (so exp(-inf) = 0) and exp(x) finite above the upper one; NaN -> NaN.
// NonPositive: for arguments known to be <= 0 or NaN (a logit minus its row maximum), without the upper clamp.

#if defined(__AVX512F__)
// AVX-512 version: x = (16 m + j) ln2/16 + r with |r| <= ln2/32, exp(x) = 2^m 2^(j/16) exp(r). The 16 values 2^(j/16)
// are one two-register permute (float: one register), exp(r) - 1 a short polynomial (Taylor degree 7 in double,
// truncation below 2e-18 relative; degree 3 in float, below 1e-8), 2^m one scalef (which floors its exponent
// argument, so it takes n/16 as it is). About 10 fewer vector operations per exp than the portable version, and a
// dependency chain half as long; the upper clamp is one min instruction, and the lower one costs nothing: the final
// scalef is masked to zero wherever x < lo (or x = -inf), so those lanes need no clamped argument.

// 2^(j/16), j = 0..15, correctly rounded to double (the float table rounds these; each is then the float nearest
// 2^(j/16)).
inline constexpr double kExp2Sixteenths[16] = {
    1.0, 1.0442737824274138, 1.0905077326652577, 1.1387886347566916, 1.189207115002721, 1.241857812073484,
    1.2968395546510096, 1.3542555469368927, 1.4142135623730951, 1.4768261459394993, 1.5422108254079407,
    1.6104903319492543, 1.681792830507429, 1.7562521603732995, 1.8340080864093424, 1.9152065613971474};

template <bool NonPositive = false>
inline VecOf<double>::V vexp(VecOf<double>::V x) {
  const __m512d lo = _mm512_set1_pd(-708.0), shifter = _mm512_set1_pd(6755399441055744.0);  // 1.5 * 2^52
  // no lower clamp: lanes below lo are zeroed by the final mask, whatever the reduction made of them
  const __m512d xc = NonPositive ? x : min_pd(_mm512_set1_pd(709.0), x);
  // n = round(16 x / ln2), held in the low bits of t (2^51 + n: the low 4 bits are j = n mod 16)
  const __m512d t = _mm512_fmadd_pd(xc, _mm512_set1_pd(23.083120654223414), shifter);
  const __m512d n = _mm512_sub_pd(t, shifter);
  // r = x - n ln2/16, ln2/16 split so that n * hi is exact (hi has 20 significant bits, |n| < 2^15)
  __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(0.0433216094970703125), xc);
  r = _mm512_fnmadd_pd(n, _mm512_set1_pd(8.9287926269338577e-8), r);
  __m512d q = _mm512_set1_pd(1.0 / 5040.0);
  q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 720.0));
  q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 120.0));
  q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 24.0));
  q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 6.0));
  q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(0.5));
  q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0));
  q = _mm512_mul_pd(q, r);  // exp(r) - 1
  const __m512d tab = _mm512_permutex2var_pd(_mm512_loadu_pd(kExp2Sixteenths), _mm512_castpd_si512(t),
                                             _mm512_loadu_pd(kExp2Sixteenths + 8));
  const __m512d y = _mm512_fmadd_pd(tab, q, tab);                                        // 2^(j/16) exp(r)
  const __m512d m = _mm512_fmsub_pd(t, _mm512_set1_pd(0.0625), _mm512_set1_pd(422212465065984.0));  // n / 16, exact
  const __mmask8 keep = _mm512_cmp_pd_mask(x, lo, _CMP_NLT_UQ);                        // not (x < lo): NaN kept
  return _mm512_maskz_scalef_pd(keep, y, m);
}

inline constexpr float kExp2SixteenthsF[16] = {
    float(kExp2Sixteenths[0]),  float(kExp2Sixteenths[1]),  float(kExp2Sixteenths[2]),  float(kExp2Sixteenths[3]),
    float(kExp2Sixteenths[4]),  float(kExp2Sixteenths[5]),  float(kExp2Sixteenths[6]),  float(kExp2Sixteenths[7]),
    float(kExp2Sixteenths[8]),  float(kExp2Sixteenths[9]),  float(kExp2Sixteenths[10]), float(kExp2Sixteenths[11]),
    float(kExp2Sixteenths[12]), float(kExp2Sixteenths[13]), float(kExp2Sixteenths[14]), float(kExp2Sixteenths[15])};

template <bool NonPositive = false>
inline VecOf<float>::V vexp(VecOf<float>::V x) {
  const __m512 lo = _mm512_set1_ps(-87.0f), shifter = _mm512_set1_ps(12582912.0f);  // 1.5 * 2^23
  const __m512 xc = NonPositive ? x : min_ps(_mm512_set1_ps(88.0f), x);
  const __m512 t = _mm512_fmadd_ps(xc, _mm512_set1_ps(23.0831206542234f), shifter);
  const __m512 n = _mm512_sub_ps(t, shifter);
  // ln2/16 = hi - lo' with hi = 0.693359375 / 16 (9 significant bits, |n| < 2^11: n * hi exact)
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.0433349609375f), xc);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(1.32621525e-5f), r);
  __m512 q = _mm512_set1_ps(1.0f / 6.0f);
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0.5f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
  q = _mm512_mul_ps(q, r);
  const __m512 tab = permute16_ps(_mm512_castps_si512(t), _mm512_loadu_ps(kExp2SixteenthsF));
  const __m512 y = _mm512_fmadd_ps(tab, q, tab);
  const __m512 m = _mm512_fmsub_ps(t, _mm512_set1_ps(0.0625f), _mm512_set1_ps(786432.0f));
  const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ);
  return _mm512_maskz_scalef_ps(keep, y, m);
}
// vexp_n: M vectors in place, each as vexp.
template <bool NonPositive = false, int M, typename V>
inline void vexp_n(V (&x)[M]) {
  for (int i = 0; i < M; ++i) x[i] = vexp<NonPositive>(x[i]);
}
#else
// Portable version: Cody-Waite reduction x = n ln2 + r (|r| <= ln2/2), polynomial for exp(r), 2^n built in the
// exponent bits. Only the constants (ExpArgs) and the polynomial (exp_poly) depend on the dtype.
//
// Constants of the reduction: the clamps, the shifter 1.5 * 2^(mantissa bits) that rounds x / ln2 to an integer n in
// the low bits of t, ln2 in two parts (hi with few significant bits, so that n hi is exact; r = x - n hi - n lo), and
// the exponent bias and position.
template <typename T>
struct ExpArgs;
template <>
struct ExpArgs<float> {
  static constexpr float lo = -87.0f, hi = 88.0f, shifter = 12582912.0f, log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr uint32_t bias = 127;
  static constexpr int mantissa = 23;
};
template <>
struct ExpArgs<double> {
  static constexpr double lo = -708.0, hi = 709.0, shifter = 6755399441055744.0, log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 6.93145751953125e-1, ln2_lo = 1.42860682030941723212e-6;
  static constexpr uint64_t bias = 1023;
  static constexpr int mantissa = 52;
};

// The reduction of M vectors: r, and the scale 2^n (0 below the lower clamp, and for NaN, where the polynomial of r
// is NaN: it is finite elsewhere, so the product with 0 is 0).
template <bool NonPositive, int M, typename V>
inline void exp_reduce(const V (&x)[M], V (&r)[M], V (&sc)[M]) {
  typedef LaneOf<V> T;
  typedef ExpArgs<T> A;
  typedef MaskOf<V> U;
  const V lo = splat<V>(A::lo), hi = splat<V>(A::hi), shifter = splat<V>(A::shifter);
  for (int i = 0; i < M; ++i) {
    V xc = vmax(x[i], lo);  // NaN stays NaN
    if (!NonPositive) xc = xc > hi ? hi : xc;
    const V t = xc * A::log2e + shifter;
    const V n = t - shifter;
    r[i] = xc - n * A::ln2_hi;
    r[i] = r[i] - n * A::ln2_lo;
    const U e = ((U)t + A::bias) << A::mantissa;
    sc[i] = (V)(e & (U)(x[i] >= lo));
  }
}

// One Horner step p = p r + c of M interleaved polynomials, with c broadcast once into a register (else each of the
// M fused multiply-adds loads it again as a memory operand).
template <typename V, int M, typename S>
inline void horner_step(V (&p)[M], const V (&r)[M], S c) {
  V cv = splat<V>(c);
  in_register(cv);
  for (int i = 0; i < M; ++i) p[i] = p[i] * r[i] + cv;
}

// p = exp(r) for |r| <= ln2/2, M vectors interleaved. float: degree 6.
template <int M>
inline void exp_poly(VecOf<float>::V (&p)[M], const VecOf<float>::V (&r)[M]) {
  for (int i = 0; i < M; ++i) p[i] = splat<VecOf<float>::V>(1.9875691500e-4f);
  for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    horner_step(p, r, c);
  for (int i = 0; i < M; ++i) p[i] = p[i] * (r[i] * r[i]) + r[i] + 1.0f;
}

// double: degree 11, a Chebyshev fit (mpmath chebyfit, 50 digits) on |r| <= ln2/2 (0.347), relative error 3.2e-18,
// 1.6e-17 with the coefficients rounded to double (0.15 ulp; the Taylor polynomial of degree 13 it replaced truncated
// below 1e-17, with 2 more FMAs).
template <int M>
inline void exp_poly(VecOf<double>::V (&p)[M], const VecOf<double>::V (&r)[M]) {
  for (int i = 0; i < M; ++i) p[i] = splat<VecOf<double>::V>(2.5110049204818658e-08);
  for (double c : {2.763265472252779e-07, 2.755724088722987e-06, 2.4801485441561313e-05, 0.00019841269890076403,
                   0.0013888888952352863, 0.008333333333319589, 0.04166666666648795, 0.1666666666666668,
                   0.5000000000000019, 1.0, 1.0})
    horner_step(p, r, c);
}

#if defined(__AVX2__)
// float with AVX2: x = (8 m + j) ln2/8 + r with |r| <= ln2/16. The 8 values 2^(j/8) are one register, looked up with
// one permute (vpermps reads the low 3 bits of each lane of t, which hold j = n mod 8); exp(r) - 1 is the Taylor
// polynomial of degree 4 (truncation below 1.3e-9 relative); 2^m, m = floor(n / 8), is added to the exponent field
// of the table entry (m >= -126 over the clamped range, so the sum is the normal number 2^(j/8) 2^m), and one fused
// multiply-add s + s (exp(r) - 1) gives the result. Against the degree-6 version below: 3 fewer multiply-adds and a
// dependency chain 3 steps shorter; paired, 0.98 of the EM pass's time in float32 (docs/kernels.md). Lanes below the
// lower clamp get s = 0 (0, or NaN where x is NaN). Within 0.9 ulp of exp over [-87, 88] (2e7 points).
inline constexpr float kExp2Eighths[8] = {1.0f,
                                          1.0905077457427979f,
                                          1.1892070770263672f,
                                          1.2968395948410034f,
                                          1.4142135381698608f,
                                          1.5422108173370361f,
                                          1.6817928552627563f,
                                          1.8340080976486206f};

template <bool NonPositive, int M>
inline void vexp_n_table(VecOf<float>::V (&x)[M]) {
  typedef VecOf<float>::V V;
  typedef VecOf<float>::U U;
  typedef ExpArgs<float> A;
  const V lo = splat<V>(A::lo), hi = splat<V>(A::hi), shifter = splat<V>(A::shifter);
  V r[M], q[M], t[M];
  for (int i = 0; i < M; ++i) {
    V xc = vmax(x[i], lo);  // NaN stays NaN
    if (!NonPositive) xc = xc > hi ? hi : xc;
    t[i] = xc * (A::log2e * 8) + shifter;  // 8 / ln2 (scaling by 8 is exact)
    const V n = t[i] - shifter;
    // ln2 / 8 in the two parts of ln2, each divided by 8 (exactly): n ln2_hi / 8 is exact for |n| < 2^11
    r[i] = xc - n * (A::ln2_hi / 8);
    r[i] = r[i] - n * (A::ln2_lo / 8);
  }
  for (int i = 0; i < M; ++i) q[i] = splat<V>(1.0f / 24.0f);
  horner_step(q, r, 1.0f / 6.0f);
  horner_step(q, r, 0.5f);
  horner_step(q, r, 1.0f);
  const V tab = {kExp2Eighths[0], kExp2Eighths[1], kExp2Eighths[2], kExp2Eighths[3],
                 kExp2Eighths[4], kExp2Eighths[5], kExp2Eighths[6], kExp2Eighths[7]};
  for (int i = 0; i < M; ++i) {
    q[i] = q[i] * r[i];  // exp(r) - 1
    const U ti = (U)t[i];
    const U e = (U)_mm256_permutevar8x32_ps(tab, (__m256i)ti) + ((ti >> 3) << A::mantissa);
    const V sc = (V)(e & (U)(x[i] >= lo));
    const V res = sc * q[i] + sc;
    x[i] = NonPositive ? res : (x[i] != x[i] ? x[i] : res);
  }
}

#endif

// vexp_n evaluates M vectors in place with their steps interleaved (step s of every vector, then step s + 1): the M
// dependency chains (the reduction and the polynomial, 4-cycle fused multiply-adds) then lie side by side in the
// instruction stream, so that a core overlaps them without having to hold M whole chains in its out-of-order window
// (gcc does not reorder them so on x86). Each lane gets the same operations in the same order whatever M, so the
// values do not depend on it; vexp is vexp_n of one vector. Live per vector during the polynomial: r, p and the scale
// 2^n (0 below the lower clamp), so M = 4 fits 16 vector registers with the coefficient. A NaN x is returned as it
// is (NonPositive: a NaN x already gives a NaN p).
template <bool NonPositive = false, int M, typename V>
inline void vexp_n(V (&x)[M]) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<V, VecOf<float>::V>) {
    vexp_n_table<NonPositive>(x);
    return;
  }
#endif
  V r[M], p[M], sc[M];
  exp_reduce<NonPositive>(x, r, sc);
  exp_poly(p, r);
  for (int i = 0; i < M; ++i) {
    const V res = p[i] * sc[i];
    x[i] = NonPositive ? res : (x[i] != x[i] ? x[i] : res);
  }
}

template <bool NonPositive = false, typename V>
inline V vexp(V x) {
  V a[1] = {x};
  vexp_n<NonPositive>(a);
  return a[0];
}

#endif  // __AVX512F__

// Unaligned vector load / store.
template <typename V, typename T>
inline V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void vstore(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Horizontal sum and maximum (NaN lanes ignored, see vmax) of the lanes: a butterfly over log2 L steps, lane j
// combined with lane j ^ B for B = L/2, L/4, .., 1 (one permute and one operation each), which leaves the result in
// every lane, for use as a vector (lane 0 for the scalar). The order is fixed for a given L; builds of different vector
// widths sum in different orders (results equal to rounding).
template <typename U, std::size_t B, std::size_t... E>
constexpr U xor_mask(std::index_sequence<E...>) {
  return U{static_cast<LaneOf<U>>(E ^ B)...};
}
template <typename V, std::size_t B, typename Op>
inline V butterfly(V v, Op op) {
  constexpr MaskOf<V> m = xor_mask<MaskOf<V>, B>(std::make_index_sequence<kLanes<V>>{});
  v = op(v, __builtin_shuffle(v, m));
  if constexpr (B > 1) v = butterfly<V, B / 2>(v, op);
  return v;
}
template <typename V>
inline V hsum_all(V v) {
  return butterfly<V, kLanes<V> / 2>(v, [](V a, V b) { return a + b; });
}
template <typename V>
inline V hmax_all(V v) {
  return butterfly<V, kLanes<V> / 2>(v, [](V a, V b) { return vmax(a, b); });
}

// The lanes of a float or double vector v as double vectors of the target's width (VecOf<double>::V), in lane
// order: for double v itself; for float its lower and upper halves, each widened. VecOf<float>::W holds the same
// lanes in one vector of twice the register width, which gcc keeps in memory and moves in pieces (an AVX2 build's
// 64-byte W); the parts are registers. The rows-in-lanes path of mixture_em_stats holds its sums in double this way
// (add_widened, widened_lane: kDoubleParts<V> double vectors per vector of T); the component-lanes path keeps W for
// its chunk sums (with the parts, its float32 pass at K = 64, D = 16 measured no faster in a short unpaired run).
template <typename V>
constexpr int kDoubleParts = sizeof(LaneOf<V>) == sizeof(double) ? 1 : 2;
template <typename V, std::size_t... E>
inline void widen_parts(const V& v, VecOf<double>::V (&out)[kDoubleParts<V>], std::index_sequence<E...>) {
  if constexpr (kDoubleParts<V> == 1) {
    out[0] = v;
  } else {
    constexpr std::size_t H = sizeof...(E);  // half the lanes of v
    typedef LaneOf<V> Half __attribute__((vector_size(sizeof(V) / 2)));
    const Half lo = __builtin_shufflevector(v, v, E...);
    const Half hi = __builtin_shufflevector(v, v, (E + H)...);
    out[0] = __builtin_convertvector(lo, VecOf<double>::V);
    out[1] = __builtin_convertvector(hi, VecOf<double>::V);
  }
}
template <typename V>
inline void widen_parts(const V& v, VecOf<double>::V (&out)[kDoubleParts<V>]) {
  widen_parts(v, out, std::make_index_sequence<kDoubleParts<V> == 1 ? 1 : kLanes<V> / 2>{});
}

// dst[0 .. kDoubleParts<V>) += the lanes of v widened.
template <typename V>
inline void add_widened(VecOf<double>::V* dst, const V& v) {
  VecOf<double>::V w[kDoubleParts<V>];
  widen_parts(v, w);
  for (int q = 0; q < kDoubleParts<V>; ++q) dst[q] += w[q];
}
// Lane j of the widened parts of one vector of T, starting at a.
inline double widened_lane(const VecOf<double>::V* a, int64_t j) {
  constexpr int64_t Ld = kLanes<VecOf<double>::V>;
  return a[j / Ld][j % Ld];
}

// v rotated by S lanes: lane j holds v[(j + S) mod L] (one permute with a constant mask).
template <typename U, std::size_t S, std::size_t... E>
constexpr U rotate_mask(std::index_sequence<E...>) {
  return U{static_cast<LaneOf<U>>((E + S) % sizeof...(E))...};
}
template <std::size_t S, typename V>
inline V rotate_lanes(const V& v) {
  constexpr MaskOf<V> m = rotate_mask<MaskOf<V>, S>(std::make_index_sequence<kLanes<V>>{});
  return __builtin_shuffle(v, m);
}

// In-place transpose of an L x L block held as L vectors (a[i][j] -> a[j][i]): log2 L stages that swap the
// off-diagonal B x B blocks of each pair of rows (i, i + B), each a two-source shuffle with a constant mask (L log2 L
// shuffles in all).
template <typename U, std::size_t B, bool HI, std::size_t... E>
constexpr U transpose_mask(std::index_sequence<E...>) {
  constexpr std::size_t L = sizeof...(E);
  // lane e of row i (HI: of row i + B): from row i (index < L) or row i + B (index >= L)
  return U{static_cast<LaneOf<U>>(HI ? ((E & B) ? L + E : E + B) : ((E & B) ? L + E - B : E))...};
}
template <typename V, typename U, std::size_t B>
inline void transpose_stage(V* a) {
  constexpr std::size_t L = kLanes<V>;
  constexpr U lo = transpose_mask<U, B, false>(std::make_index_sequence<L>{});
  constexpr U hi = transpose_mask<U, B, true>(std::make_index_sequence<L>{});
  for (std::size_t i = 0; i < L; ++i)
    if (!(i & B)) {
      const V x = a[i], y = a[i + B];
      a[i] = __builtin_shuffle(x, y, lo);
      a[i + B] = __builtin_shuffle(x, y, hi);
    }
}
template <typename V, typename U, std::size_t B>
inline void transpose_stages(V* a) {
  transpose_stage<V, U, B>(a);
  if constexpr (B > 1) transpose_stages<V, U, B / 2>(a);
}
template <typename T>
inline void transpose_block(typename VecOf<T>::V* a) {
  transpose_stages<typename VecOf<T>::V, typename VecOf<T>::U, sizeof(typename VecOf<T>::V) / sizeof(T) / 2>(a);
}

}  // namespace cpu
}  // namespace gmmkernels
