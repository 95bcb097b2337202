// `blocklab bench memory`: what training holds in memory, end-to-end against block-wise with every
// block resident (today's `shared` interleaving), only the active block resident (`resident`), and
// blocks with their own input/output modules, one resident at a time (`independent`: what each
// process of a parallel run holds). One process per configuration, since peak RSS is a process's
// own; each trains a few real steps (every block at least once, switches included) and stops.
#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/spawn.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "io/run_dir.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/format.h"
#include "util/memory.h"
#include "util/system.h"

namespace blocklab {
namespace {

// A shape whose layer stack dominates memory (the L=12, d=256, batch 256); --set overrides it.
const std::vector<std::string> kBenchShape = {"model.layers=12", "model.hidden=256", "train.batch_size=256",
                                              "train.log_every=1000000", "train.checkpoint_every=1000000"};

// The keys that make each mode, and how many steps it takes to reach its steady state.
std::vector<std::string> mode_keys(const std::string& mode, int blocks) {
  if (mode == "e2e") return {"model.mode=e2e"};
  std::vector<std::string> keys = {"model.mode=blocks", fmt::format("model.blocks={}", blocks)};
  if (mode == "shared") keys.push_back("train.schedule=interleaved");
  if (mode == "resident" || mode == "independent") keys.insert(keys.end(), {"train.schedule=resident", "train.block_run=1"});
  if (mode == "independent") keys.push_back("train.shared=independent");
  return keys;
}

int measure_row(const BenchMemoryArgs& a) {
  TensorMemoryTracker::install();  // before any tensor, so the split counts everything
  const Config cfg = Config::load(a.config, a.overrides);
  TrainOptions opts;
  opts.out_dir = a.out;
  opts.plain_progress = true;
  opts.tag = a.row;
  // Two rounds: every block has trained (and, all resident, holds AdamW state) before the second.
  opts.stop_after = cfg.blocks_mode() ? 2 * cfg.model.blocks : 3;
  std::filesystem::remove_all(a.out);
  auto result = train(cfg, opts);
  auto row = result.at("memory");
  row["mode"] = a.row;
  row["blocks"] = cfg.model.blocks;
  row["steps"] = opts.stop_after;
  RunDir(a.out).write_json("memory-row.json", row);
  return 0;
}

nlohmann::json run_row(const BenchMemoryArgs& a, const std::string& mode, int blocks) {
  const auto dir = fmt::format("{}/rows/{}-{}", a.out, mode, blocks);
  std::vector<std::string> args = {"blocklab", "bench", "memory", "--row", mode, "--out", dir};
  if (!a.config.empty()) args.insert(args.end(), {"--config", a.config});
  for (const auto& s : kBenchShape) args.insert(args.end(), {"--set", s});
  for (const auto& s : a.overrides) args.insert(args.end(), {"--set", s});
  for (const auto& s : mode_keys(mode, blocks)) args.insert(args.end(), {"--set", s});
  if (!succeeded(wait_for(spawn_self(args, "bench memory's measuring process"))))
    throw UserError(fmt::format("bench memory: the {} row with B={} failed (see its messages above)", mode, blocks));
  return RunDir(dir, false).read_json("memory-row.json");
}

}  // namespace

int cmd_bench_memory(const BenchMemoryArgs& a) {
  if (!a.row.empty()) return measure_row(a);
  auto probe = a.overrides;
  probe.insert(probe.begin(), kBenchShape.begin(), kBenchShape.end());
  const Config cfg = Config::load(a.config, probe);
  for (int b : a.blocks)
    if (cfg.model.layers % b != 0)
      throw UserError(fmt::format("bench memory: --blocks {} does not divide model.layers = {}", b, cfg.model.layers));
  fmt::print("bench memory: {} L={} d={} batch={} threads={} BLAS {}; one process per row\n", to_string(cfg.model.family),
             cfg.model.layers, cfg.model.hidden, cfg.train.batch_size, cfg.train.threads, blas_core());
  std::vector<nlohmann::json> rows = {run_row(a, "e2e", 1)};
  for (int b : a.blocks)
    for (const char* mode : {"shared", "resident", "independent"}) rows.push_back(run_row(a, mode, b));

  const auto training = [](const nlohmann::json& r) {
    return double(r["peak_rss_bytes"].get<int64_t>() - r["baseline_rss_bytes"].get<int64_t>());
  };
  const double e2e = training(rows.front());
  fmt::print("\n{:<12} {:>2} {:>11} {:>11} {:>11} {:>8} {:>9} {:>24} {:>12}\n", "mode", "B", "process", "baseline",
             "training", "x e2e", "1.25/B", "params+grads+optimizer", "activations");
  for (auto& r : rows) {
    const int B = r["blocks"].get<int>();
    const double t = training(r), state = double(r["parameter_bytes"].get<int64_t>() + r["gradient_bytes"].get<int64_t>() +
                                                 r["optimizer_bytes"].get<int64_t>() + r["average_bytes"].get<int64_t>());
    r["training_bytes"] = int64_t(t);
    r["training_vs_e2e"] = t / e2e;
    r["state_bytes"] = int64_t(state);
    const bool blocks = r["mode"] != "e2e";
    fmt::print("{:<12} {:>2} {:>11} {:>11} {:>11} {:>8} {:>9} {:>24} {:>12}\n", r["mode"].get<std::string>(),
               blocks ? std::to_string(B) : "",
               format_mib(double(r["peak_rss_bytes"].get<int64_t>()), 1),
               format_mib(double(r["baseline_rss_bytes"].get<int64_t>()), 1), format_mib(t, 1),
               fmt::format("{:.3f}", t / e2e), blocks ? fmt::format("{:.3f}", 1.25 / B) : "", format_mib(state, 1),
               format_mib(double(r.value("activation_bytes", int64_t(0))), 1));
  }
  nlohmann::json out = {{"rows", rows}, {"config", cfg.to_toml()}, {"threads", cfg.train.threads}, {"blas", blas_core()}};
  RunDir(a.out).write_json("memory.json", out);
  fmt::print("\ntraining = peak RSS minus the process after libtorch and the data loaded; {}/memory.json\n", a.out);
  return 0;
}

}  // namespace blocklab
