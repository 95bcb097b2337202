#include "util/simd.h"

namespace blocklab::simd {

std::string kernel_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512)";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2, FMA)";
  return "x86-64";
#else
  return "portable";
#endif
}

}  // namespace blocklab::simd
