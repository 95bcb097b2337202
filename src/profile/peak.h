// This machine's measured peaks, the yardstick of every "share of peak" and MFU figure:
//   fp32 FLOP/s  - a large GEMM, the faster of libtorch's mm (the BLAS in use) and blocklab's own
//                  (util/gemm.h, what the models' linear layers run on), and a hand-written FMA
//                  loop (the cores' arithmetic roof, widest vector ISA the CPU has);
//   bandwidth    - stream-style copy and triad over arrays far larger than the caches.
// `blocklab bench peak` measures them per thread count and saves them as JSON; the profiler
// reads that file.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace blocklab {

/// The GEMM kernels a peak can come from (the names stored in peak files).
inline constexpr const char* kLibtorchMm = "libtorch mm";
inline constexpr const char* kBlocklabGemm = "blocklab AVX-512";

struct PeakEntry {
  int threads = 1;
  double gemm_gflops = 0;   // the GEMM peak: the faster of the two below, on gemm_n^3 fp32
  std::string gemm_kernel;  // which: kLibtorchMm or kBlocklabGemm (empty in files from before)
  double mm_gflops = 0;     // best torch::mm_out
  int64_t gemm_n = 0;
  double fma_gflops = 0;  // FMA loop, widest ISA (fma_isa)
  std::string fma_isa;
  double fma_avx2_gflops = 0;  // FMA loop with 256-bit vectors (0 where not x86)
  double copy_gbs = 0;         // a[i] = b[i]: 8 bytes per element (STREAM counting)
  double triad_gbs = 0;        // a[i] = b[i] + s c[i]: 12 bytes per element
  double stream_mib = 0;       // size of each array

  /// The arithmetic roof used for shares of peak and MFU.
  double flops_roof() const { return fma_gflops > 0 ? fma_gflops : gemm_gflops; }
  double bandwidth_roof() const { return std::max(copy_gbs, triad_gbs); }
  nlohmann::json to_json() const;
  static PeakEntry from_json(const nlohmann::json& j);
};

struct PeakTable {
  std::string blas_core;    // OpenBLAS core at measurement time (OPENBLAS_CORETYPE changes it)
  std::string measured_at;  // UTC time
  std::vector<PeakEntry> entries;

  const PeakEntry* for_threads(int threads) const;
  nlohmann::json to_json() const;
  static PeakTable from_json(const nlohmann::json& j, const std::string& source);
};

/// $BLOCKLAB_PEAK, else $XDG_CACHE_HOME/blocklab/peak.json, else ~/.cache/blocklab/peak.json.
std::string default_peak_path();
/// UserError naming the file if it cannot be read or is not a peak file.
PeakTable load_peak(const std::string& path);
/// Creates the directory if needed; the write is atomic.
void save_peak(const PeakTable& table, const std::string& path);

/// FMA-loop GFLOP/s with `threads` threads, each running independent FMA chains for about
/// `seconds`. `isa` selects "avx512", "avx2" or "generic"; "" picks the widest available.
double fma_loop_gflops(int threads, double seconds, std::string isa = "", std::string* isa_used = nullptr);
/// Best GFLOP/s on n x n fp32 matrices with `threads` intra-op threads: of torch::mm_out, and of
/// blocklab's GEMM where the CPU has one of its kernels and the fused kernels are on.
struct GemmPeak {
  double gflops = 0, mm_gflops = 0;
  std::string kernel;
};
GemmPeak gemm_peak(int threads, int64_t n, int reps);
/// Best GFLOP/s of one kernel (kLibtorchMm or kBlocklabGemm) on n x n fp32 matrices; 0 for
/// blocklab's where the CPU cannot run it.
double gemm_kernel_gflops(const std::string& kernel, int threads, int64_t n, int reps);
/// Stream copy and triad GB/s with `threads` threads over arrays of `mib` MiB each (best of reps).
std::pair<double, double> stream_gbs(int threads, double mib, int reps);

/// All of the above for one thread count; `quick` takes about a second instead of several.
PeakEntry measure_peak(int threads, bool quick);

/// The peak for `threads`: from the file at `path` (default path if empty) when it has that
/// thread count, else measured quickly now. `source` says which, for the report.
PeakEntry resolve_peak(int threads, const std::string& path, std::string* source);

}  // namespace blocklab
