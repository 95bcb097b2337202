#include "util/seed.h"

namespace blocklab {
namespace {
// splitmix64's finalizer: a bijection that scatters nearby inputs over all 64 bits.
uint64_t mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
}  // namespace

uint64_t derive_seed(uint64_t seed, Stream stream, uint64_t index) {
  const uint64_t base = mix(seed * kGolden + uint64_t(stream) + 1);
  return mix(base + (index + 1) * kGolden) >> 1;
}

}  // namespace blocklab
