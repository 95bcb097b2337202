// `blocklab demo`: the default recipe trained end-to-end and block-wise at equal compute, each
// in its own process (so peak memory is each run's own), side by side on the two cores unless
// --sequential, then one table of the family's headline metric, memory and time.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "families/family.h"
#include "io/config.h"
#include "io/run_dir.h"
#include "train/synthetic.h"
#include "util/error.h"
#include "util/format.h"
#include "util/system.h"

extern char** environ;

namespace blocklab {
namespace {

pid_t spawn_train(const std::string& config, const std::string& mode, const std::string& out) {
  std::vector<std::string> args = {"blocklab", "train", config, "--set", "model.mode=" + mode, "--out", out,
                                   "--plain-progress", "--tag", mode};
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0)
    throw UserError("demo: cannot start a training process");
  return pid;
}

void wait_ok(pid_t pid, const std::string& mode) {
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw UserError(fmt::format("demo: the {} run failed (see its messages above)", mode));
}

}  // namespace

int cmd_demo(const DemoArgs& a) {
  std::filesystem::create_directories(a.out);
  const Config cfg = Config::load("", a.overrides);  // the built-in default recipe (the shipped configs restate it)
  RunDir dir(a.out);
  dir.write_text("demo-config.toml", cfg.to_toml());
  for (const auto& mode : {"e2e", "blocks"})
    std::filesystem::remove(std::filesystem::path(a.out) / mode / "checkpoint.safetensors");  // a fresh demo each time

  fmt::print(stderr, "demo: training end-to-end and blocks (B={}) at equal compute, {} in {}\n", cfg.model.blocks,
             a.sequential ? "one after the other" : "side by side", a.out);
  const std::string config = dir.file("demo-config.toml");
  std::vector<std::string> modes = {"e2e", "blocks"};
  if (a.sequential) {
    for (const auto& m : modes) wait_ok(spawn_train(config, m, dir.file(m)), m);
  } else {
    std::vector<pid_t> pids;
    for (const auto& m : modes) pids.push_back(spawn_train(config, m, dir.file(m)));
    for (size_t i = 0; i < modes.size(); ++i) wait_ok(pids[i], modes[i]);
  }

  // Step times side by side would mislead (the two vCPUs share one core and slow each other
  // unevenly), so they are measured here, alone, with the two modes alternating in one process.
  fmt::print(stderr, "demo: timing steps of both modes, alternating in this process\n");
  set_threads(cfg.train.threads);
  const auto times = alternating_step_times(cfg, /*rounds=*/10);

  const auto e2e = RunDir(dir.file("e2e")).read_json("summary.json");
  const auto blk = RunDir(dir.file("blocks")).read_json("summary.json");
  const auto e2e_eval = Evaluation::from_json(e2e), blk_eval = Evaluation::from_json(blk);
  auto row = [](const std::string& name, const std::string& x, const std::string& y) {
    fmt::print("{:<30} {:>14} {:>14}\n", name, x, y);
  };
  fmt::print("\n");
  row("", "end-to-end", fmt::format("blocks (B={})", blk["blocks"].get<int>()));
  row(e2e_eval.headline.name, e2e_eval.headline.show(), blk_eval.headline.show());
  row("peak memory (RSS)", format_mib(e2e["peak_rss_bytes"].get<double>()), format_mib(blk["peak_rss_bytes"].get<double>()));
  row(a.sequential ? "train time (one after the other)" : "train time (side by side)",
      fmt::format("{:.0f} s", e2e["train_seconds"].get<double>()), fmt::format("{:.0f} s", blk["train_seconds"].get<double>()));
  row("optimizer steps", std::to_string(e2e["steps"].get<int64_t>()), std::to_string(blk["steps"].get<int64_t>()));
  row("time per step (alone)", fmt::format("{:.1f} ms", times.e2e_ms), fmt::format("{:.1f} ms", times.block_ms));
  row("inference per example", fmt::format("{:.3f} ms", e2e_eval.ms_per_example),
      fmt::format("{:.3f} ms", blk_eval.ms_per_example));

  // The gap is oriented so that a positive number means end-to-end is better.
  const auto& h = e2e_eval.headline;
  auto gap = [&](double blocks_value) { return h.higher_is_better ? h.value - blocks_value : blocks_value - h.value; };
  fmt::print("\ngap (end-to-end better by): {}\n", h.show_difference(gap(blk_eval.headline.value)));
  for (const auto& m : blk_eval.alternatives)
    fmt::print("  blocks {}: {}, gap {}\n", m.name, m.show(), h.show_difference(gap(m.value)));
  for (const auto& line : blk_eval.lines) fmt::print("  blocks: {}\n", line);
  fmt::print("time per step: median of 10 alternating rounds in one process on synthetic data; train time: each "
             "run's own wall clock, {}\n",
             a.sequential ? "run one after the other" : "both runs side by side on this machine's cores");
  fmt::print("summaries: {}/e2e/summary.json, {}/blocks/summary.json\n", a.out, a.out);
  return 0;
}

}  // namespace blocklab
