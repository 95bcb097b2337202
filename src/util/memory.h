// Memory accounting. Peak RSS says what the process cost; the tensor tracker says what the
// training step itself allocated (parameters, activations saved for backward, gradients),
// byte-exact and free of allocator noise, so blocks and end-to-end can be compared fairly.
#pragma once
#include <cstdint>

namespace blocklab {

/// Peak resident set size of this process so far, bytes.
int64_t peak_rss_bytes();
/// Resident set size of this process now, bytes.
int64_t current_rss_bytes();

/// Counts the bytes of every CPU tensor allocation once installed (by wrapping libtorch's CPU
/// allocator). CUDA tensors are not seen; on CUDA use the caching allocator's statistics.
class TensorMemoryTracker {
 public:
  static void install();  // idempotent; tensors allocated before stay untracked
  static bool installed();
  static int64_t current_bytes();
  static int64_t peak_bytes();
  static void reset_peak();  // peak := current
};

}  // namespace blocklab
