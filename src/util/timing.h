// Wall-clock timing for benchmarks: the steady clock, in seconds.
#pragma once
#include <chrono>

namespace blocklab {

/// Seconds that `reps` calls of f take together.
template <typename F>
double seconds_of(F&& f, int reps = 1) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace blocklab
