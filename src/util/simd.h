// Short vectors for the CPU kernels (models/attention.cpp, models/modulation.cpp,
// models/activation.cpp, train/adamw.cpp, util/gemm.cpp), through GCC's vector extensions:
// Vec<T> is 32 bytes (8 floats, 4 doubles), one AVX register, or two SSE registers in the
// baseline build; Floats16 is one AVX-512 register, for kernels compiled for x86-64-v4 only
// (explicit target("arch=x86-64-v4") functions, called when wide_vectors() or, for the GEMM,
// gemm::available()). Written as plain
// arithmetic, the compiler emits each instruction set's own operations; every sum is taken in the order the code says
// (nothing is reassociated, no relaxed floating-point flags), so results do not depend on the
// machine beyond the use of FMA.
//
// A kernel is compiled once per x86-64 level and the loader picks the best the CPU has (GCC
// function multi-versioning): mark the outer loop BLOCKLAB_ISAS and everything it calls
// always_inline (a function it calls is compiled for the baseline instruction set).
#pragma once
#include <array>
#include <cstdint>
#include <type_traits>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

// No vector crosses a call (everything is inlined), so GCC's note that vector arguments change the
// ABI between instruction sets does not apply. (It is reported at the end of the translation
// unit, so it cannot be pushed and popped around this header.)
#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(__x86_64__) && defined(__GNUC__)
// (The x86-64 levels, not single extensions: "avx512f" alone implies AVX2 but not FMA.)
#define BLOCKLAB_ISAS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BLOCKLAB_ISAS
#endif
#define BLOCKLAB_INLINE inline __attribute__((always_inline))

namespace blocklab::simd {

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 8;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 4;
};
template <typename T>
using Vec = typename Simd<T>::V;
template <typename T>
constexpr int64_t kLanes = Simd<T>::kLanes;

typedef float Floats16 __attribute__((vector_size(64)));

/// Lanes of a vector V of T (kLanes<T> for Vec<T>, 16 for Floats16).
template <typename T, typename V>
constexpr int64_t kLanesOf = int64_t(sizeof(V) / sizeof(T));

/// Unaligned loads and stores of a vector V of any width.
template <typename V, typename T>
BLOCKLAB_INLINE V load_as(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V, typename T>
BLOCKLAB_INLINE void store_as(T* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}
template <typename T>
BLOCKLAB_INLINE Vec<T> load(const T* p) {
  return load_as<Vec<T>>(p);
}
template <typename T>
BLOCKLAB_INLINE void store(T* p, const Vec<T>& v) {
  store_as(p, v);
}
template <typename To, typename From>
BLOCKLAB_INLINE To bits_as(const From& x) {
  static_assert(sizeof(To) == sizeof(From));
  To y;
  std::memcpy(&y, &x, sizeof y);
  return y;
}

/// The lanes of v (a vector V of T, 2 to 16 lanes) added as a tree: the upper half to the lower,
/// then again, down to one lane. (Added in order, lane 0 first, a row's sum in a LayerNorm was a
/// chain of 15 dependent additions, the latency that bounded the modulation kernels.)
template <typename T, typename V>
BLOCKLAB_INLINE T lane_sum(const V& v) {
  constexpr int64_t L = kLanesOf<T, V>;
  static_assert(L == 2 || L == 4 || L == 8 || L == 16, "lane_sum: 2, 4, 8 or 16 lanes");
  if constexpr (L == 2) {
    return v[0] + v[1];
  } else {
    typedef T Half __attribute__((vector_size(sizeof(V) / 2)));
    Half lo, hi;
    if constexpr (L == 16) {
      lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
      hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    } else if constexpr (L == 8) {
      lo = __builtin_shufflevector(v, v, 0, 1, 2, 3);
      hi = __builtin_shufflevector(v, v, 4, 5, 6, 7);
    } else {
      lo = __builtin_shufflevector(v, v, 0, 1);
      hi = __builtin_shufflevector(v, v, 2, 3);
    }
    return lane_sum<T, Half>(lo + hi);
  }
}

/// e^x for x <= 0 (a softmax's exponents once the maximum is subtracted; a Gaussian's -x^2/2),
/// lane by lane with no calls or branches: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite), e^r by
/// Cephes' degree-6 expf polynomial, 2^n put into the exponent bits (n rounded by the 1.5 * 2^23
/// trick, which IEEE arithmetic keeps exact: nothing here needs relaxed floating-point rules).
/// Within 2 ulp of std::exp; exactly 0 below kExpLow = -87.33 and for -inf; NaN stays NaN. V is a
/// vector of floats of any width (Vec<float>, or 16 lanes in a kernel compiled for AVX-512);
/// float64 vectors take std::exp lane by lane (the tests' precision).
/// exp_clamped_lanes is the same without the zeroing: below -87.33 (and for -inf) it gives
/// e^-87.33 ~ 1.2e-38, for callers to whom that is zero (two instructions fewer).
/// kExpLow sits just above ln of the smallest normal float (-87.3365): at that point the
/// polynomial's rounding put e^x a hair below it, a subnormal float, and every vector operation
/// with a subnormal lane takes a microcode assist on x86; a peaked softmax clamps many lanes, and
/// its forward pass ran 4x slower. From -87.33 up, every result is a normal float.
constexpr float kExpLow = -87.33f;
template <typename V>
BLOCKLAB_INLINE V exp_clamped_lanes(const V& x) {
  typedef int32_t Bits __attribute__((vector_size(sizeof(V))));
  constexpr float kLow = kExpLow, kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const V low = V{} + kLow;
  const V xc = x < low ? low : x;
  const V shifted = xc * kLog2e + kRound;  // n + 1.5 * 2^23, exactly: n sits in the low mantissa bits
  const V n = shifted - kRound;
  const V r = xc - n * kLn2Hi - n * kLn2Lo;
  const V poly =
      ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
       1.6666665459e-1f) * r + 5.0000001201e-1f;
  const V er = poly * r * r + r + 1.0f;
  // 2^n into the exponent bits, from the mantissa bits of `shifted` (1.5 * 2^23's own bits vanish
  // in the shift): (bits + 127) << 23 = (n + 127) << 23, as converting n would give.
  const Bits two_n = (bits_as<Bits>(shifted) + 127) << 23;
  return er * bits_as<V>(two_n);
}
template <typename V>
BLOCKLAB_INLINE V exp_nonpositive(const V& x) {
  typedef int32_t Bits __attribute__((vector_size(sizeof(V))));
  const V low = V{} + kExpLow;
  // Zero below the range by masking the bits (a multiply by a 0/1 factor would make -inf * 0 = NaN);
  // "not below" rather than "at or above", which a NaN is not either.
  return bits_as<V>(bits_as<Bits>(exp_clamped_lanes(x)) & ~(x < low));
}
BLOCKLAB_INLINE Vec<double> exp_nonpositive(const Vec<double>& x) {
  Vec<double> e;
  for (int64_t l = 0; l < kLanes<double>; ++l) e[l] = std::exp(x[l]);
  return e;
}

/// While in scope, this thread's SSE/AVX arithmetic reads subnormal inputs as zero and writes
/// subnormal results as zero (the MXCSR's DAZ and FTZ bits; restored after). Every kernel's worker
/// holds one: a vector operation with a subnormal lane takes a microcode assist on x86, and a
/// trained network has them (a peaked softmax's tiny probabilities times small gradients; small
/// gradients themselves). Measured: a GEMM with 10% of A's entries subnormal ran 21x slower, 0.6 ->
/// 12.9 ms ([2176, 64] x [64, 256]); attention's backward products took 13.5% of a real training
/// run's time against 5.9% without subnormals. A subnormal float is below 1.2e-38; reading it as 0
/// changes no sum it is part of by more than that. (The float64 kernels alike, below 2.2e-308.)
class FlushSubnormals {
 public:
#if defined(__x86_64__)
  FlushSubnormals() : saved_(__builtin_ia32_stmxcsr()) { __builtin_ia32_ldmxcsr(saved_ | kDaz | kFtz); }
  ~FlushSubnormals() { __builtin_ia32_ldmxcsr(saved_); }

 private:
  static constexpr unsigned kDaz = 0x0040, kFtz = 0x8000;
  unsigned saved_;
#endif
};

/// at::parallel_for over [begin, end) with every worker's subnormals flushed (FlushSubnormals):
/// how each fused kernel spreads its work, so that none runs a worker without the flush.
template <typename F>
void parallel_flushed(int64_t begin, int64_t end, int64_t grain, const F& f) {
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) {
    const FlushSubnormals flush;
    f(b, e);
  });
}

/// An L x L block held as L vectors of L lanes (V of any width), transposed in registers: log2(L)
/// stages, each exchanging the elements whose row and lane indices differ in one bit, by two-input
/// shuffles with constant masks (element (i, l) <-> (i ^ b, l ^ b) where bit b of i and of l differ).
/// The masks are compile-time tables, loaded as constants (built in the function, GCC may build
/// them lane by lane at run time where many transposes are inlined).
template <typename Index, int L, int B, bool High>
constexpr std::array<Index, L> transpose_mask() {
  std::array<Index, L> m{};  // the new row i (bit B clear; High: row i | B)
  for (int l = 0; l < L; ++l) m[size_t(l)] = Index(High ? ((l & B) ? L + l : (l ^ B)) : ((l & B) ? L + (l ^ B) : l));
  return m;
}
template <typename V, int B>
BLOCKLAB_INLINE void transpose_stage(V* r) {
  using Mask = decltype(r[0] < r[0]);  // the integer vector of V's shape
  using Index = std::remove_cv_t<std::remove_reference_t<decltype(Mask{}[0])>>;
  constexpr int L = int(sizeof(V) / sizeof(r[0][0]));
  static constexpr std::array<Index, L> kLow = transpose_mask<Index, L, B, false>(),
                                        kHigh = transpose_mask<Index, L, B, true>();
  const Mask low = load_as<Mask>(kLow.data()), high = load_as<Mask>(kHigh.data());
#pragma GCC unroll 16
  for (int i = 0; i < L; ++i)
    if (!(i & B)) {
      const V x = r[i], y = r[i | B];
      r[i] = __builtin_shuffle(x, y, low);
      r[i | B] = __builtin_shuffle(x, y, high);
    }
  if constexpr (B > 1) transpose_stage<V, B / 2>(r);
}
template <typename V>
BLOCKLAB_INLINE void transpose_block(V* r) {
  transpose_stage<V, int(sizeof(V) / sizeof(r[0][0])) / 2>(r);
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/// The instruction set the kernels run with on this machine ("x86-64-v4 (AVX-512)", ...).
std::string kernel_isa();
/// Whether the CPU has AVX-512 (x86-64-v4): kernels with 16-float vectors may run.
bool has_avx512();
/// Whether the element-wise and attention kernels run 16-float vectors: has_avx512() unless
/// switched off (default on). Off, they run Vec's 8 lanes as on a CPU without AVX-512, which lets
/// the tests cover both paths on one machine. (Not to be switched between an attention's forward
/// and its backward: P's padding follows the lanes; the backward checks it.)
void set_wide_vectors(bool enabled);
bool wide_vectors();

/// Whether the fused CPU kernels (attention, adaLN modulation, bias + activation, the AdamW pass, and the
/// linear layers on blocklab's GEMM: models/dense.h) may run (default true). Off, each takes
/// libtorch's ops instead: the tests' reference, and what `bench step --fused-kernels` and
/// `bench twin --libtorch-ops` compare against in one process.
void set_fused_kernels(bool enabled);
bool fused_kernels_enabled();
/// Whether x is what blocklab's CPU loops take: on the CPU, float32 or float64.
bool cpu_floating(const at::Tensor& x);

}  // namespace blocklab::simd
