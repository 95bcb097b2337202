#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "data/image_data.h"
#include "eval/evaluate.h"
#include "io/run_dir.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/system.h"

namespace blocklab {

int cmd_train(const TrainArgs& a) {
  Config cfg = Config::from_file(a.config);
  for (const auto& s : a.overrides) cfg.set(s);
  cfg.validate();
  TrainOptions opts;
  opts.out_dir = !a.out.empty() ? a.out
                                : fmt::format("runs/{}-{}", std::filesystem::path(a.config).stem().string(), cfg.model.mode);
  opts.resume = a.resume;
  opts.plain_progress = a.plain;
  opts.label = a.label;
  opts.stop_after = a.stop_after;
  if (!a.resume && std::filesystem::exists(std::filesystem::path(opts.out_dir) / "checkpoint.safetensors"))
    throw UserError(fmt::format("{}: holds a run already; pass --resume to continue it or choose another --out",
                                opts.out_dir));
  fmt::print(stderr, "{}: {} mode, L={} B={} d={}, {} thread(s), BLAS {}, run directory {}\n", a.label, cfg.model.mode,
             cfg.model.layers, cfg.model.blocks, cfg.model.hidden, cfg.train.threads, blas_core(), opts.out_dir);
  const auto summary = train(cfg, opts);
  // Interrupted (Ctrl-C) with a checkpoint saved: the conventional exit status of SIGINT.
  const bool interrupted = summary.contains("stopped_at") && a.stop_after < 0;
  return interrupted ? 130 : 0;
}

int cmd_eval(const std::string& run_dir, const std::vector<std::string>& overrides) {
  RunDir run(run_dir, /*create=*/false);
  Config cfg = Config::from_file(run.file("config.toml"));
  for (const auto& s : overrides) cfg.set(s);
  cfg.validate();
  set_threads(cfg.train.threads);
  const torch::Device device(resolve_device(cfg.train.device));
  auto data = ImageData::load(cfg.data.dir, cfg.data.train_limit, cfg.data.test_limit);
  DenoisingClassifier task(ViT(vit_options(cfg, data.classes)), cfg);
  if (!run.has("model.safetensors"))
    throw UserError(fmt::format("{}: no model.safetensors (is the run finished?)", run_dir));
  load_weights(*task.model(), load_safetensors(run.file("model.safetensors")), run.file("model.safetensors"));
  task.model()->to(device);
  const auto report = evaluate(task, cfg, data, device);
  run.write_json("eval.json", report.to_json());
  fmt::print("{}", report.table());
  return 0;
}

}  // namespace blocklab
