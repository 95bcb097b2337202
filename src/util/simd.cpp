#include "util/simd.h"

#include <atomic>

namespace blocklab::simd {

namespace {
std::atomic<bool> g_fused_kernels{true};
std::atomic<bool> g_wide_vectors{true};
}  // namespace

void set_fused_kernels(bool enabled) { g_fused_kernels.store(enabled); }
bool fused_kernels_enabled() { return g_fused_kernels.load(std::memory_order_relaxed); }
bool cpu_floating(const at::Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
}

void set_wide_vectors(bool enabled) { g_wide_vectors.store(enabled); }
bool wide_vectors() { return g_wide_vectors.load(std::memory_order_relaxed) && has_avx512(); }

bool has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool v4 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v4");
  }();
  return v4;
#else
  return false;
#endif
}

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
