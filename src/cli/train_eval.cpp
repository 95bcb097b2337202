// `blocklab train` and `blocklab eval`.
#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "families/registry.h"
#include "io/run_dir.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/system.h"

namespace blocklab {

int cmd_train(const TrainArgs& a) {
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
  // Interrupted (Ctrl-C) with a checkpoint saved: the conventional exit status of SIGINT.
  const bool interrupted = summary.contains("stopped_at") && a.stop_after < 0;
  return interrupted ? 130 : 0;
}

int cmd_eval(const std::string& run_dir, const std::vector<std::string>& overrides) {
  RunDir run(run_dir, /*create=*/false);
  const Config cfg = Config::load(run.file("config.toml"), overrides);
  set_threads(cfg.train.threads);
  const torch::Device device(resolve_device(cfg.train.device));
  if (!run.has("model.safetensors"))
    throw UserError(fmt::format("{}: no model.safetensors (is the run finished?)", run_dir));
  const auto data = load_dataset(cfg);
  auto family = make_family(cfg, data, device);
  load_weights(family->model(), load_safetensors(run.file("model.safetensors")), run.file("model.safetensors"));
  const auto evaluation = family->evaluate(*data, Split::Test, uint64_t(cfg.train.seed));
  run.write_json("eval.json", evaluation.to_json());
  fmt::print("{}", evaluation.report());
  return 0;
}

}  // namespace blocklab
