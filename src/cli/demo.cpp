// `blocklab demo`: the default recipe trained end-to-end and block-wise at equal compute, each
// in its own process (so peak memory is each run's own), side by side on the two cores unless
// --sequential, then one table.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "io/config.h"
#include "io/run_dir.h"
#include "util/error.h"

extern char** environ;

namespace blocklab {
namespace {

pid_t spawn_train(const std::string& config, const std::string& mode, const std::string& out) {
  std::vector<std::string> args = {"blocklab", "train", config, "--set", "model.mode=" + mode, "--out", out,
                                   "--plain-progress", "--label", mode};
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

std::string mib(double bytes) { return fmt::format("{:.0f} MiB", bytes / (1 << 20)); }

}  // namespace

int cmd_demo(const DemoArgs& a) {
  std::filesystem::create_directories(a.out);
  Config cfg;  // the built-in default recipe (configs/vit-fmnist.toml states the same values)
  for (const auto& s : a.overrides) cfg.set(s);
  cfg.validate();
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

  const auto e2e = RunDir(dir.file("e2e")).read_json("summary.json");
  const auto blk = RunDir(dir.file("blocks")).read_json("summary.json");
  auto row = [](const std::string& name, const std::string& x, const std::string& y) {
    fmt::print("{:<28} {:>14} {:>14}\n", name, x, y);
  };
  fmt::print("\n");
  row("", "end-to-end", fmt::format("blocks (B={})", blk["blocks"].get<int>()));
  row("test accuracy", fmt::format("{:.2f}%", 100 * e2e["test_accuracy"].get<double>()),
      fmt::format("{:.2f}%", 100 * blk["test_accuracy"].get<double>()));
  row("peak memory (RSS)", mib(e2e["peak_rss_bytes"].get<double>()), mib(blk["peak_rss_bytes"].get<double>()));
  row("train time", fmt::format("{:.0f} s", e2e["train_seconds"].get<double>()),
      fmt::format("{:.0f} s", blk["train_seconds"].get<double>()));
  row("optimizer steps", std::to_string(e2e["steps"].get<int64_t>()), std::to_string(blk["steps"].get<int64_t>()));
  row("time per step", fmt::format("{:.1f} ms", e2e["ms_per_step"].get<double>()),
      fmt::format("{:.1f} ms", blk["ms_per_step"].get<double>()));
  row("inference per image", fmt::format("{:.3f} ms", e2e["inference_ms_per_image"].get<double>()),
      fmt::format("{:.3f} ms", blk["inference_ms_per_image"].get<double>()));
  fmt::print("\ngap (end-to-end - blocks): {:+.2f} points\n",
             100 * (e2e["test_accuracy"].get<double>() - blk["test_accuracy"].get<double>()));
  if (blk.contains("test_accuracy_expected_embedding")) {
    const double t1 = blk["test_accuracy_expected_embedding"].get<double>();
    fmt::print("  blocks with E[y|z] between steps (temperature 1, the reference sampler): {:.2f}%, gap {:+.2f} points\n",
               100 * t1, 100 * (e2e["test_accuracy"].get<double>() - t1));
  }
  for (const auto& s : blk["inference_steps"])
    fmt::print("  blocks: after step at sigma {:<8.4g} (block {}): {:.2f}%\n", s["sigma"].get<double>(),
               s["block"].get<int>(), 100 * s["accuracy"].get<double>());
  for (const auto& t : blk["teacher_forced"])
    fmt::print("  blocks: block {} teacher-forced at sigma {:.4g}: {:.2f}%\n", t["block"].get<int>(),
               t["sigma"].get<double>(), 100 * t["accuracy"].get<double>());
  fmt::print("summaries: {}/e2e/summary.json, {}/blocks/summary.json\n", a.out, a.out);
  return 0;
}

}  // namespace blocklab
