// Facts about the machine a run is on, recorded in every summary.
#pragma once
#include <cstdint>
#include <string>

namespace blocklab {

/// OpenBLAS core name ("Haswell", ...) or a warning string when libtorch is not using OpenBLAS.
std::string blas_core();
/// The commit this binary was built from (`git describe --always --dirty`; "unknown" outside git).
const char* build_commit();
/// Applies the thread count (intra-op and, when loaded, OpenBLAS).
void set_threads(int threads);
/// Physical memory of this machine, bytes.
int64_t physical_memory_bytes();
/// Where blocklab keeps what it measures or trains once per machine (the peak table, the Fréchet
/// feature network): $BLOCKLAB_CACHE, else $XDG_CACHE_HOME/blocklab, else ~/.cache/blocklab.
std::string cache_dir();
/// "cpu" or "cuda:N", validated: UserError if CUDA is asked for and not available.
std::string resolve_device(const std::string& requested);

}  // namespace blocklab
