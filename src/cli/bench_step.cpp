// `blocklab bench step`: what one training step costs, end-to-end against one block, measured
// in one process on synthetic data. Memory comes from the tensor tracker (exact bytes, no
// allocator noise); time is the median step with the two modes alternating after warm-up.
#include <algorithm>

#include <fmt/format.h>

#include "cli/commands.h"
#include "models/dense.h"
#include "models/layer_function.h"
#include "train/synthetic.h"
#include "util/format.h"
#include "util/gemm.h"
#include "util/memory.h"
#include "util/simd.h"
#include "util/system.h"

namespace blocklab {
namespace {

struct StepMemory {
  double activations = 0;  // bytes alive between forward and backward, beyond the resident state
  double step_peak = 0;    // peak bytes above the resident state during the step
  double resident = 0;     // parameters + optimizer state before the step
};

StepMemory measure_memory(Config cfg, Mode mode, int repeats) {
  cfg.model.mode = mode;
  SyntheticTraining training(cfg);
  StepMemory m;
  int64_t before = 0;
  double activations = 0;
  training.runner().after_forward = [&] { activations = double(TensorMemoryTracker::current_bytes() - before); };
  for (int i = 0; i < training.round(); ++i) training.step();  // warm-up: every block's Adam state exists
  for (int r = 0; r < repeats * training.round(); ++r) {
    before = TensorMemoryTracker::current_bytes();
    TensorMemoryTracker::reset_peak();
    training.step();
    m.activations = std::max(m.activations, activations);
    m.step_peak = std::max(m.step_peak, double(TensorMemoryTracker::peak_bytes() - before));
    m.resident = double(before);
  }
  return m;
}

}  // namespace

int cmd_bench_step(const BenchStepArgs& a) {
  TensorMemoryTracker::install();  // before any model exists, so parameters are counted too
  const Config cfg = Config::load(a.config, a.overrides);
  set_threads(cfg.train.threads);
  simd::set_fused_kernels(!a.libtorch_ops);
  const int B = cfg.model.blocks;
  fmt::print("bench step: {} L={} B={} d={} heads={} batch={} threads={} device={} BLAS {}\n",
             to_string(cfg.model.family), cfg.model.layers, B, cfg.model.hidden, cfg.model.heads,
             cfg.train.batch_size, cfg.train.threads, cfg.train.device, blas_core());
  const auto e2e = measure_memory(cfg, Mode::E2E, 1);
  const auto blk = measure_memory(cfg, Mode::Blocks, 1);
  // The fused CPU kernels against libtorch's ops, the fused MLP against its layers separate, and a
  // layer as one autograd function against its functions composed, on the same models, alternating
  // round by round.
  struct Variant {
    std::function<void()> set;
    std::string with, ratio;
  };
  const bool fused_default = !a.libtorch_ops;
  const auto defaults = [fused_default] {
    simd::set_fused_kernels(fused_default);
    set_mlp_fused(true);
    set_layer_function(true);
  };
  std::vector<Variant> options = {{defaults, "", ""}};
  if (a.fused_kernels) options.push_back({[] { simd::set_fused_kernels(false); }, "with libtorch's ops", "fused / libtorch's ops"});
  if (a.separate_mlp)
    options.push_back({[defaults] { defaults(), set_mlp_fused(false); }, "with the MLP's layers separate", "fused MLP / separate"});
  if (a.composed_layers)
    options.push_back({[defaults] { defaults(), set_layer_function(false); }, "with each layer's functions composed",
                       "one function / composed"});
  std::vector<std::function<void()>> setters;
  for (const auto& o : options) setters.push_back(o.set);
  const auto variants = alternating_step_times(cfg, a.repeats, setters);
  defaults();
  const auto& times = variants[0];
  auto row = [](const std::string& what, const std::string& x, const std::string& y, const std::string& r) {
    fmt::print("{:<34} {:>14} {:>14} {:>10}\n", what, x, y, r);
  };
  row("", "end-to-end", "one block", "ratio");
  row("activations saved for backward", format_mib(e2e.activations, 2), format_mib(blk.activations, 2),
      fmt::format("{:.2f}x", e2e.activations / blk.activations));
  row("step peak above resident state", format_mib(e2e.step_peak, 2), format_mib(blk.step_peak, 2),
      fmt::format("{:.2f}x", e2e.step_peak / blk.step_peak));
  row("resident params + optimizer state", format_mib(e2e.resident, 2), format_mib(blk.resident, 2), "");
  row("time per step (median, alternating)", fmt::format("{:.2f} ms", times.e2e_ms),
      fmt::format("{:.2f} ms", times.block_ms), fmt::format("{:.3f}", times.block_ms / times.e2e_ms));
  auto compare = [&](const StepTimes& other, const std::string& with, const std::string& ratio) {
    row("  " + with, fmt::format("{:.2f} ms", other.e2e_ms), fmt::format("{:.2f} ms", other.block_ms),
        fmt::format("{:.3f}", other.block_ms / other.e2e_ms));
    row("  " + ratio, fmt::format("{:.3f}", times.e2e_ms / other.e2e_ms), fmt::format("{:.3f}", times.block_ms / other.block_ms), "");
  };
  for (size_t i = 1; i < options.size(); ++i) compare(variants[i], options[i].with, options[i].ratio);
  const bool fused = cfg.train.device == "cpu" && !a.libtorch_ops;
  fmt::print("attention, adaLN, activations, AdamW: {}; linear layers (the MLP's GELU in its first GEMM): {}\n",
             fused ? "fused CPU kernels (" + simd::kernel_isa() + ")" : "libtorch's ops",
             fused && gemm::available() ? "blocklab's GEMM (AVX-512)" : "libtorch's mm");
  fmt::print("block step / end-to-end step = {:.3f} (target <= 1.15/B = {:.3f}); process peak RSS {}\n",
             times.block_ms / times.e2e_ms, 1.15 / B, format_mib(double(peak_rss_bytes()), 2));
  return 0;
}

}  // namespace blocklab
