// Short vectors for the CPU kernels (models/attention.cpp, models/modulation.cpp,
// train/adamw.cpp), through GCC's vector extensions: 32 bytes (8 floats, 4 doubles), one AVX
// register, or two SSE registers in the baseline build. Written as plain arithmetic, the compiler
// emits each instruction set's own operations; every sum is taken in the order the code says
// (nothing is reassociated, no relaxed floating-point flags), so results do not depend on the
// machine beyond the use of FMA.
//
// A kernel is compiled once per x86-64 level and the loader picks the best the CPU has (GCC
// function multi-versioning): mark the outer loop BLOCKLAB_ISAS and everything it calls
// always_inline (a function it calls is compiled for the baseline instruction set).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

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
  typedef int32_t Bits __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 8;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(32)));
  typedef int64_t Bits __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 4;
};
template <typename T>
using Vec = typename Simd<T>::V;
template <typename T>
constexpr int64_t kLanes = Simd<T>::kLanes;

template <typename T>
BLOCKLAB_INLINE Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);  // an unaligned vector load
  return v;
}
template <typename T>
BLOCKLAB_INLINE void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof v);
}
template <typename To, typename From>
BLOCKLAB_INLINE To bits_as(const From& x) {
  static_assert(sizeof(To) == sizeof(From));
  To y;
  std::memcpy(&y, &x, sizeof y);
  return y;
}

/// The lanes of v added in order, lane 0 first.
template <typename T>
BLOCKLAB_INLINE T lane_sum(const Vec<T>& v) {
  T s = v[0];
  for (int64_t l = 1; l < kLanes<T>; ++l) s += v[l];
  return s;
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/// The instruction set the kernels run with on this machine ("x86-64-v4 (AVX-512)", ...).
std::string kernel_isa();

}  // namespace blocklab::simd
