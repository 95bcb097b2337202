// `blocklab bench step`: what one training step costs, end-to-end against one block, measured
// side by side in one process on synthetic data. Memory comes from the tensor tracker (exact
// bytes, no allocator noise); time is the median of repeated steps after warm-up.
#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "cli/commands.h"
#include "train/synthetic.h"
#include "util/memory.h"
#include "util/system.h"

namespace blocklab {
namespace {

struct StepCost {
  double activations = 0;  // bytes alive between forward and backward, beyond the resident state
  double step_peak = 0;    // peak bytes above the resident state during the step
  double resident = 0;     // parameters + optimizer state before the step
  std::vector<double> ms;  // per measured step
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

StepCost measure(Config cfg, const std::string& mode, int repeats) {
  cfg.model.mode = mode;
  SyntheticTraining training(cfg);
  StepCost cost;
  int64_t before = 0;
  double activations = 0;
  training.runner().after_forward = [&] { activations = double(TensorMemoryTracker::current_bytes() - before); };
  for (int i = 0; i < training.round(); ++i) training.step();  // warm-up: every block's Adam state exists
  for (int r = 0; r < repeats * training.round(); ++r) {
    before = TensorMemoryTracker::current_bytes();
    TensorMemoryTracker::reset_peak();
    const auto t0 = std::chrono::steady_clock::now();
    training.step();
    cost.ms.push_back(1000 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cost.activations = std::max(cost.activations, activations);
    cost.step_peak = std::max(cost.step_peak, double(TensorMemoryTracker::peak_bytes() - before));
    cost.resident = double(before);
  }
  return cost;
}

std::string mib(double b) { return fmt::format("{:.2f} MiB", b / (1 << 20)); }

}  // namespace

int cmd_bench_step(const BenchStepArgs& a) {
  TensorMemoryTracker::install();  // before any model exists, so parameters are counted too
  Config cfg = a.config.empty() ? Config{} : Config::from_file(a.config);
  for (const auto& s : a.overrides) cfg.set(s);
  cfg.validate();
  set_threads(cfg.train.threads);
  const int B = cfg.model.blocks;
  fmt::print("bench step: L={} B={} d={} heads={} patch={} batch={} threads={} device={} BLAS {}\n", cfg.model.layers, B,
             cfg.model.hidden, cfg.model.heads, cfg.model.patch, cfg.train.batch_size, cfg.train.threads,
             cfg.train.device, blas_core());
  const auto e2e = measure(cfg, "e2e", a.repeats);
  const auto blk = measure(cfg, "blocks", a.repeats);
  auto row = [](const std::string& what, const std::string& x, const std::string& y, const std::string& r) {
    fmt::print("{:<34} {:>14} {:>14} {:>10}\n", what, x, y, r);
  };
  row("", "end-to-end", "one block", "ratio");
  row("activations saved for backward", mib(e2e.activations), mib(blk.activations),
      fmt::format("{:.2f}x", e2e.activations / blk.activations));
  row("step peak above resident state", mib(e2e.step_peak), mib(blk.step_peak),
      fmt::format("{:.2f}x", e2e.step_peak / blk.step_peak));
  row("resident params + optimizer state", mib(e2e.resident), mib(blk.resident), "");
  const double te = median(e2e.ms), tb = median(blk.ms);
  row("time per step (median)", fmt::format("{:.2f} ms", te), fmt::format("{:.2f} ms", tb),
      fmt::format("{:.3f}", tb / te));
  fmt::print("block step / end-to-end step = {:.3f} (target <= 1.15/B = {:.3f}); process peak RSS {}\n", tb / te,
             1.15 / B, mib(double(peak_rss_bytes())));
  return 0;
}

}  // namespace blocklab
