// `blocklab profile`: warm up, profile N training steps, and explain them. Also the benchmark
// of the profiler's own cost on a training step.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/config.h"
#include "profile/peak.h"
#include "profile/report.h"

namespace blocklab {

struct ProfileOptions {
  Config cfg;        // validated; model.mode picks end-to-end or block-wise steps
  int steps = 6;     // profiled steps
  int warmup = -1;   // -1: three rounds (of B steps in blocks mode, so every block has run; 3 end-to-end)
  PeakEntry peak;    // zeros: shares of peak are not shown
  std::string peak_source;
  // > 0: the GEMM peak is also measured on n x n matrices just before and just after the profiled
  // steps, and after each round of unprofiled steps (CPU only). This host's speed drifts by up to 2x from one minute to the next; a peak
  // measured at another time moves the MFU either way, one measured around the steps does not.
  int64_t peak_around_n = 0;
};

/// Unprofiled steps after the profiled ones: kUnprofiledRounds rounds of ProfileOptions::steps
/// timed steps (after one untimed), each round's time the median of its steps.
constexpr int kUnprofiledRounds = 3;
struct UnprofiledRound {
  double ms_per_step, gemm_after;  // the GEMM peak after it (0: not measured); before it, the previous one's
};

struct ProfileResult {
  Profile profile;
  double wall_ms = 0;  // the profiled steps, timed around the loop independently of the events
  bool cuda = false;   // times from CUDA events
  int steps_without_shapes = 0;  // see copy_shapes_across_steps
  std::vector<OpRow> table, totals;
  std::vector<PhaseRow> phases;
  std::vector<StepRow> steps;
  std::vector<Utilization> mfu;
  // Rounds of as many steps again without the profiler, after the profiled ones: the observer
  // costs every op a few microseconds (`bench profiler-overhead`), which a step of ~1,000 ops
  // feels. Their MFU takes the profiled steps' FLOPs per step (CPU only; else empty).
  std::optional<Utilization> unprofiled;
  std::vector<UnprofiledRound> rounds;     // the unprofiled rounds behind it
  double gemm_before = 0, gemm_after = 0;  // GFLOP/s around the steps (0: not measured)
  std::string gemm_around_kernel;          // the peak file's GEMM kernel, which they measure

  /// The mean of the GEMM peaks measured around the steps (0 when not measured).
  double gemm_around() const { return gemm_before > 0 && gemm_after > 0 ? (gemm_before + gemm_after) / 2 : 0; }
  /// Every GEMM peak the run measured, in order: before and after the profiled steps, then after
  /// each unprofiled round (empty when not measured).
  std::vector<double> gemm_peaks() const;
  /// Sum of the table's self times (ops and the ranges' host time), ms.
  double self_sum_ms() const;
  /// The MFU rows as printed and written: the profiled ones, then the unprofiled one.
  std::vector<Utilization> mfu_rows() const;
  nlohmann::json ops_json(const ProfileOptions& o) const;
  nlohmann::json trace_json(const ProfileOptions& o) const;
};

ProfileResult run_profile(const ProfileOptions& o);
/// Writes DIR/ops.json and DIR/trace.json (each atomically).
void write_profile(const ProfileResult& r, const ProfileOptions& o, const std::string& dir);
/// The report on stdout: table (top rows by self time), phases, MFU, hottest ops.
void print_profile(const ProfileResult& r, const ProfileOptions& o, int top);

struct OverheadResult {
  int rounds = 0, steps_per_round = 0;
  // Median step times: no profiler; profiled as `blocklab profile` does it (shapes recorded in
  // the first step of each session of steps_per_round steps); profiled with shapes in every step.
  double plain_ms = 0, profiled_ms = 0, shapes_ms = 0;
  double overhead = 0, shapes_overhead = 0;  // median over rounds of (arm's time / plain time) - 1
  double events_per_step = 0;
};
/// Times steps with and without the profiler, the arms interleaved round by round (each round
/// in a rotated order) so that drift in the machine's speed hits every arm alike.
OverheadResult measure_profiler_overhead(const Config& cfg, int rounds, int steps_per_round);

}  // namespace blocklab
