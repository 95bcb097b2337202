// Human-readable quantities, formatted the same way everywhere.
#pragma once
#include <string>

#include <fmt/format.h>

namespace blocklab {

/// Bytes as MiB with `decimals` digits, e.g. "352 MiB" or "541.18 MiB".
inline std::string format_mib(double bytes, int decimals = 0) {
  return fmt::format("{:.{}f} MiB", bytes / double(1 << 20), decimals);
}

}  // namespace blocklab
