// `blocklab bench peak`: this machine's fp32 FLOP/s and memory bandwidth per thread count,
// saved as JSON for the profiler's shares of peak and MFU.
#include <cstdlib>
#include <ctime>

#include <fmt/format.h>

#include "cli/commands.h"
#include "profile/peak.h"
#include "util/system.h"

namespace blocklab {

int cmd_bench_peak(const BenchPeakArgs& a) {
  PeakTable table;
  table.blas_core = blas_core();
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  fmt::print("bench peak: BLAS {} (OPENBLAS_CORETYPE={}), OMP_WAIT_POLICY={}\n", table.blas_core,
             coretype ? coretype : "unset", wait ? wait : "unset");
  fmt::print("{:>7} {:>12} {:>12} {:>14} {:>12} {:>10} {:>10}\n", "threads", "GEMM GFLOP/s", "libtorch mm", "FMA GFLOP/s",
             "FMA avx2", "copy GB/s", "triad GB/s");
  for (int t : a.threads) {
    const auto e = measure_peak(t, a.quick);
    fmt::print("{:>7} {:>12.1f} {:>12.1f} {:>9.1f} {:<4} {:>12.1f} {:>10.1f} {:>10.1f}  GEMM: {}\n", t, e.gemm_gflops,
               e.mm_gflops, e.fma_gflops, e.fma_isa, e.fma_avx2_gflops, e.copy_gbs, e.triad_gbs, e.gemm_kernel);
    table.entries.push_back(e);
  }
  if (!table.entries.empty() && table.entries.back().threads > 1 && (!wait || std::string(wait) != "passive"))
    fmt::print("note: with several threads, OMP_WAIT_POLICY=passive avoids spin-waiting collapses on shared cores\n");
  table.measured_at = [] {
    const std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return std::string(buf);
  }();
  const std::string out = a.out.empty() ? default_peak_path() : a.out;
  save_peak(table, out);
  fmt::print("GEMM: the faster of torch::mm_out and blocklab's GEMM on {0}x{0}x{0}; FMA: 12 independent FMA chains per thread; copy/triad: {1:.0f} MiB arrays, "
             "STREAM byte counting\nwrote {2}\n",
             table.entries.empty() ? 0 : table.entries[0].gemm_n, table.entries.empty() ? 0 : table.entries[0].stream_mib,
             out);
  return 0;
}

}  // namespace blocklab
