// `blocklab train` and `blocklab eval`.
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "families/registry.h"
#include "io/atomic_file.h"
#include "io/run_dir.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/system.h"

namespace blocklab {

int cmd_train(const TrainArgs& a) {
  if (a.parent_pid > 0) {
    // Started by demo: SIGTERM (checkpoint, exit) when the parent dies, even by SIGKILL.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != pid_t(a.parent_pid)) return 128 + SIGTERM;  // it died before prctl took effect
  }
  const Config cfg = Config::load(a.config, a.overrides);
  TrainOptions opts;
  opts.out_dir = !a.out.empty() ? a.out
                                : fmt::format("runs/{}-{}", std::filesystem::path(a.config).stem().string(),
                                              to_string(cfg.model.mode));
  opts.resume = a.resume;
  opts.plain_progress = a.plain;
  opts.tag = a.tag;
  opts.stop_after = a.stop_after;
  if (!a.resume && std::filesystem::exists(std::filesystem::path(opts.out_dir) / "checkpoint.safetensors"))
    throw UserError(fmt::format("{}: holds a run already; pass --resume to continue it or choose another --out",
                                opts.out_dir));
  fmt::print(stderr, "{}: {} {} mode, L={} B={} d={}, {} thread(s), BLAS {}, run directory {}\n", a.tag,
             to_string(cfg.model.family), to_string(cfg.model.mode), cfg.model.layers, cfg.model.blocks,
             cfg.model.hidden, cfg.train.threads, blas_core(), opts.out_dir);
  const auto summary = train(cfg, opts);
  // Stopped by a signal with a checkpoint saved: the conventional exit status, 128 + signal.
  return summary.contains("signal") ? 128 + summary["signal"].get<int>() : 0;
}

int cmd_eval(const std::string& run_dir, const std::vector<std::string>& overrides) {
  RunDir run(run_dir, /*create=*/false);
  const Config cfg = Config::load_for_evaluation(run.file("config.toml"), overrides);
  set_threads(cfg.train.threads);
  const torch::Device device(resolve_device(cfg.train.device));
  if (!run.has("model.safetensors"))
    throw UserError(fmt::format("{}: no model.safetensors (is the run finished?)", run_dir));
  std::map<std::string, std::string> meta;
  const auto weights = load_safetensors(run.file("model.safetensors"), &meta);
  const auto run_config = read_file(run.file("config.toml"));  // as training wrote it, without the overrides
  if (meta["config"] != run_config)
    throw UserError(fmt::format("{}: weights of another run ({}); {}/config.toml is {}", run.file("model.safetensors"),
                                meta["config"].empty() ? std::string("no config recorded") : describe_weights(meta["config"]),
                                run_dir, describe_weights(run_config)));
  const auto data = load_dataset(cfg);
  auto family = make_family(cfg, data, device);
  load_weights(family->model(), weights, run.file("model.safetensors"));
  const auto evaluation = family->evaluate(*data, Split::Test, uint64_t(cfg.train.seed));
  run.write_json("eval.json", evaluation.to_json());
  fmt::print("{}", evaluation.report());
  return 0;
}

}  // namespace blocklab
