// `blocklab profile` (training steps, or `profile linear`) and `blocklab bench profiler-overhead`.
#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "io/atomic_file.h"
#include "profile/linear.h"
#include "profile/profile_run.h"
#include "util/error.h"
#include "util/simd.h"
#include "util/system.h"

namespace blocklab {

namespace fs = std::filesystem;

namespace {

// The config, with --mode applied as the last override.
Config load_config(const std::string& config, std::vector<std::string> overrides, const std::string& mode) {
  if (!mode.empty()) overrides.push_back("model.mode=" + mode);
  return Config::load(config, overrides);
}

}  // namespace

int cmd_profile(const ProfileArgs& a) {
  if (a.libtorch_ops) simd::set_fused_kernels(false);
  std::string config = a.target;
  const bool run_dir = fs::is_directory(a.target);
  if (run_dir) {
    config = (fs::path(a.target) / "config.toml").string();
    if (!fs::exists(config)) throw UserError(fmt::format("{}: a run directory has a config.toml; this one has none", a.target));
  } else if (!fs::exists(a.target)) {
    throw UserError(fmt::format("{}: no such config file or run directory", a.target));
  }
  ProfileOptions o;
  o.cfg = load_config(config, a.overrides, a.mode);
  o.steps = a.steps;
  o.warmup = a.warmup;
  set_threads(o.cfg.train.threads);
  o.peak = resolve_peak(o.cfg.train.threads, a.peak, &o.peak_source);
  if (a.peak_around) o.peak_around_n = o.peak.gemm_n > 0 ? o.peak.gemm_n : 2048;
  const std::string out = !a.out.empty() ? a.out
                          : run_dir      ? (fs::path(a.target) / (std::string("profile-") + to_string(o.cfg.model.mode))).string()
                                         : fmt::format("runs/profile-{}-{}", fs::path(a.target).stem().string(), to_string(o.cfg.model.mode));
  const auto r = run_profile(o);
  print_profile(r, o, a.top);
  write_profile(r, o, out);
  fmt::print("wrote {0}/ops.json and {0}/trace.json (open the trace in https://ui.perfetto.dev or chrome://tracing)\n",
             out);
  return 0;
}

int cmd_profile_linear(const ProfileLinearArgs& a) {
  set_threads(a.threads);
  std::string source;
  const auto peak = resolve_peak(a.threads, a.peak, &source);
  const std::vector<int64_t> sizes(a.sizes.begin(), a.sizes.end()), batches(a.batches.begin(), a.batches.end());
  const auto rows = linear_walkthrough(sizes, batches, a.seconds);
  print_linear(rows, peak, source);
  if (!a.out.empty()) {
    nlohmann::json j = {{"threads", a.threads}, {"blas_core", blas_core()}, {"peak", peak.to_json()},
                        {"rows", nlohmann::json::array()}};
    for (const auto& r : rows) j["rows"].push_back(r.to_json(peak));
    write_file_atomic(a.out, j.dump(2) + "\n");
    fmt::print("wrote {}\n", a.out);
  }
  return 0;
}

int cmd_bench_profiler_overhead(const BenchOverheadArgs& a) {
  const Config cfg = load_config(a.config, a.overrides, a.mode);
  set_threads(cfg.train.threads);
  fmt::print("profiler overhead: {} mode, L={} B={} d={} batch={} threads={} device={}; {} rounds x {} steps per arm, "
             "interleaved\n",
             to_string(cfg.model.mode), cfg.model.layers, cfg.model.blocks, cfg.model.hidden, cfg.train.batch_size,
             cfg.train.threads, cfg.train.device, a.rounds, a.steps);
  const auto r = measure_profiler_overhead(cfg, a.rounds, a.steps);
  fmt::print("median step: {:.3f} ms without the profiler, {:.3f} ms profiled as `blocklab profile` does (shapes in the "
             "first step of {}), {:.3f} ms with shapes in every step; {:.0f} events per step\n",
             r.plain_ms, r.profiled_ms, a.steps, r.shapes_ms, r.events_per_step);
  fmt::print("profiler overhead {:+.2f}% (target < 5%); with shapes in every step {:+.2f}% (median over rounds of the "
             "ratio of the arms' total step times)\n",
             100 * r.overhead, 100 * r.shapes_overhead);
  return 0;
}

}  // namespace blocklab
