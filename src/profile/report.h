// From recorded events to answers: the op tree (who ran inside whom), self times, FLOPs, the
// table sorted by self time, phase totals, per-step FLOPs and MFU, and the Chrome trace.
//
// The tree: on each thread ops nest in ops (RecordFunction scopes are strictly nested); a
// top-level op belongs to the innermost Range open around it; Ranges nest in Ranges. An event's
// self time is its duration minus its children's, so the self times of all events add up to the
// duration of the outermost ranges (the steps) exactly: a Range's self time is host code that
// ran in it outside any op (the C++ of the trainer, the optimizer loop, the profiler itself).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "profile/collector.h"

namespace blocklab {

struct Profile {
  std::vector<OpEvent> events;  // in start order
  std::vector<int> parent;      // index of the parent event, -1 for roots
  std::vector<int64_t> self_ns;
  std::vector<int64_t> flops;    // this op's own count (0: not a counted op)
  std::vector<char> flop_root;   // counted, and no ancestor is (so step totals count each FLOP once)
  std::vector<int> step;         // index of the enclosing Range named "step", -1 if none
};

Profile analyze(std::vector<OpEvent> events);

/// The profiler records argument shapes in the first profiled step only (recording them costs
/// more than the rest of the profiler together); every step of a run has the same ops with the
/// same shapes. For each later Range "step" whose ops have the same names in the same order as
/// the first shaped step's, this copies the shapes over, op by op. Returns the number of steps
/// left without shapes (their op sequence differs; their FLOPs are not counted).
int copy_shapes_across_steps(std::vector<OpEvent>& events);

/// One line of the table: an op with one set of input shapes, or a Range's own host time.
struct OpRow {
  std::string name, shapes;
  bool range = false;
  int64_t calls = 0, self_ns = 0, total_ns = 0, flops = 0;
  double gflops() const { return total_ns > 0 ? double(flops) / double(total_ns) : 0; }  // FLOP/ns = GFLOP/s
};
/// Sorted by self time, largest first.
std::vector<OpRow> op_table(const Profile& p);
/// The same, grouped by op name only (all shapes together); ranges left out.
std::vector<OpRow> op_totals(const Profile& p);

struct PhaseRow {
  std::string name;
  int64_t calls = 0, total_ns = 0, self_ns = 0, flops = 0;
};
/// Every Range name but "step": data, forward/..., loss, backward, optimizer, then any others.
std::vector<PhaseRow> phase_table(const Profile& p);

struct StepRow {
  int index = 0;    // 0-based among the profiled steps
  int block = -1;   // from its "forward/block{b}" range; -1 end-to-end
  int64_t dur_ns = 0, flops = 0;
  bool shapes = false;  // its ops have shapes (so its FLOPs are counted)
};
std::vector<StepRow> step_table(const Profile& p);

struct Utilization {
  std::string what;  // "step", "block 0", ...
  int steps = 0;
  double ms_per_step = 0, gflop_per_step = 0, gflops = 0;
  double mfu = 0;       // against the FMA roof (0 when no peak)
  double mfu_gemm = 0;  // against the measured GEMM peak
  double mfu_gemm_around = 0;  // against the GEMM peak measured around the steps (0: not measured)
};
/// u.gflops from u's GFLOP and milliseconds per step, and its MFU against each peak (a peak of 0
/// leaves that MFU at 0).
void set_rates(Utilization& u, double peak_gflops, double gemm_gflops, double gemm_around_gflops);
/// All steps with shapes together, then (when steps carry a block) each block. A peak of 0 leaves
/// its MFU at 0.
std::vector<Utilization> utilization(const std::vector<StepRow>& steps, double peak_gflops, double gemm_gflops,
                                     double gemm_around_gflops = 0);

/// The Chrome trace: phases on their own row (tid 0, "phases") above each thread's ops.
nlohmann::json chrome_trace(const Profile& p, const nlohmann::json& meta);

/// Microseconds with nanosecond digits, for trace timestamps.
double us(int64_t ns);

}  // namespace blocklab
