// `blocklab demo`: the default recipe trained end-to-end and block-wise at equal compute, each
// in its own process (so peak memory is each run's own), side by side on the two cores unless
// --sequential, then one table of the family's headline metric, memory and time. A signal to the
// demo reaches its children (each saves a checkpoint); if the demo dies, they end with it.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/spawn.h"
#include "families/family.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "io/atomic_file.h"
#include "io/run_dir.h"
#include "report/report.h"
#include "train/synthetic.h"
#include "util/error.h"
#include "util/format.h"
#include "util/system.h"

namespace blocklab {
namespace {

// The children, for the signal handler, which forwards what the demo receives.
volatile pid_t g_children[2] = {0, 0};
volatile std::sig_atomic_t g_demo_signal = 0;
void forward_signal(int sig) {
  g_demo_signal = sig;
  for (pid_t pid : g_children)
    if (pid > 0) ::kill(pid, sig);
}

// Each run keeps its own report.html current (open runs/demo/<mode>/report.html while it trains)
// and evaluates every `eval_every` steps.
pid_t spawn_train(const std::string& config, const std::string& mode, const std::string& out, int eval_every) {
  return spawn_self({"blocklab", "train", config, "--set", "model.mode=" + mode, "--set",
                     "train.eval_every=" + std::to_string(eval_every), "--out", out, "--plain-progress", "--report",
                     "--tag", mode, "--parent-pid", std::to_string(::getpid())},
                    "the demo's training process");
}

// End-to-end steps between the demo's evaluations, when the config does not say: 4 in the
// default recipe (2,340 steps), each some seconds on the 10,000 test images.
constexpr int kDemoEvalEvery = 600;

// Waits for the children (in spawn order); false if a signal stopped the demo.
bool wait_all(const std::vector<pid_t>& pids, const std::vector<std::string>& modes) {
  std::string failed;
  for (size_t i = 0; i < pids.size(); ++i) {
    const int status = wait_for(pids[i]);
    g_children[i] = 0;
    if (!succeeded(status)) failed += (failed.empty() ? "" : " and ") + modes[i];
  }
  if (g_demo_signal) return false;
  if (!failed.empty()) throw UserError(fmt::format("demo: the {} run failed (see its messages above)", failed));
  return true;
}

}  // namespace

int cmd_demo(const DemoArgs& a) {
  const Config cfg = Config::load("", a.overrides);  // the built-in default recipe (the shipped configs restate it)
  RunDir dir(a.out);
  const auto lock = dir.lock();  // one demo per directory
  if (dir.has("demo-config.toml") && read_file(dir.file("demo-config.toml")) != cfg.to_toml() && !a.force)
    throw UserError(fmt::format("{}: holds a demo that ran with other settings (see its demo-config.toml); pass --force "
                                "to replace it, or choose another --out",
                                a.out));
  // A fresh demo each time: nothing of an earlier one survives to be mixed with the new files.
  for (const auto& mode : {"e2e", "blocks"}) std::filesystem::remove_all(std::filesystem::path(a.out) / mode);
  dir.write_text("demo-config.toml", cfg.to_toml());

  fmt::print(stderr, "demo: training end-to-end and blocks (B={}) at equal compute, {} in {}\n", cfg.model.blocks,
             a.sequential ? "one after the other" : "side by side", a.out);
  const std::string config = dir.file("demo-config.toml");
  const std::vector<std::string> modes = {"e2e", "blocks"};
  // Both modes evaluate at the same compute: a blocks step trains one block of B.
  const int e2e_eval_every = cfg.train.eval_every > 0 ? cfg.train.eval_every : kDemoEvalEvery;
  auto eval_every = [&](const std::string& mode) { return mode == "blocks" ? e2e_eval_every * cfg.model.blocks : e2e_eval_every; };
  g_demo_signal = 0;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, forward_signal);
  bool finished = true;
  if (a.sequential) {
    for (size_t i = 0; i < modes.size() && finished; ++i) {
      g_children[0] = spawn_train(config, modes[i], dir.file(modes[i]), eval_every(modes[i]));
      finished = wait_all({g_children[0]}, {modes[i]});
    }
  } else {
    std::vector<pid_t> pids;
    for (size_t i = 0; i < modes.size(); ++i) {
      pids.push_back(spawn_train(config, modes[i], dir.file(modes[i]), eval_every(modes[i])));
      g_children[i] = pids.back();
    }
    finished = wait_all(pids, modes);
  }
  if (!finished) {
    fmt::print(stderr, "demo: {}; the runs saved checkpoints in {}/e2e and {}/blocks\n", strsignal(g_demo_signal), a.out, a.out);
    return 128 + g_demo_signal;
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
  write_file_atomic(dir.file("report.html"), render_report({dir.file("e2e"), dir.file("blocks")}));
  fmt::print("report: {} (open it in a browser; no network needed)\n", dir.file("report.html"));
  return 0;
}

}  // namespace blocklab
