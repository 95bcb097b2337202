// `blocklab profile linear`: y = x W + b from the smallest case up. For each size it times the
// matrix product and the bias add alone, the two one after the other, and the fused addmm,
// forward and backward, and places each on a roofline: arithmetic intensity (FLOPs per byte of
// minimal memory traffic) against achieved GFLOP/s and GB/s, with what limits it - the fixed cost
// of a call (the same code on a 1x1 problem), memory bandwidth, or arithmetic.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "profile/peak.h"

namespace blocklab {

struct LinearRow {
  int64_t batch = 0, size = 0;  // x: [batch, size], W: [size, size], b: [size]
  std::string what;             // "fwd matmul", "fwd add", "fwd matmul + add", "fwd addmm", "bwd ..."
  double us = 0;                // median time per call
  double fixed_us = 0;          // the same on a 1x1 problem: dispatch, autograd, allocation, BLAS setup
  double flops = 0, bytes = 0;  // FLOPs and minimal fp32 memory traffic

  double intensity() const { return bytes > 0 ? flops / bytes : 0; }
  double gflops() const { return flops / us / 1e3; }
  double gbs() const { return bytes / us / 1e3; }
  /// "overhead", "memory" or "compute": the largest of fixed_us and the roofline's memory and
  /// arithmetic times at the given peaks.
  std::string limit(const PeakEntry& peak) const;
  nlohmann::json to_json(const PeakEntry& peak) const;
};

/// Times every variant for each (batch, size); batch 0 means "same as size, at most 1024".
/// Each row runs for about `seconds` (at least 3 timed calls) after a warm-up call.
std::vector<LinearRow> linear_walkthrough(const std::vector<int64_t>& sizes, const std::vector<int64_t>& batches,
                                          double seconds);

void print_linear(const std::vector<LinearRow>& rows, const PeakEntry& peak, const std::string& peak_source);

}  // namespace blocklab
