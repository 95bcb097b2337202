// Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.
#pragma once
#include <string>

namespace blocklab {

/// Writes `bytes` to `path` via `path.tmp.<pid>`, fsync, rename, fsync of the directory.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// Reads a whole file; UserError naming it if it cannot be read.
std::string read_file(const std::string& path);

}  // namespace blocklab
