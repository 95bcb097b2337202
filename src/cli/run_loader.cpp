#include "cli/run_loader.h"

#include <filesystem>

#include <fmt/format.h>

#include "families/registry.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "train/assemble.h"
#include "train/checkpoint.h"
#include "util/error.h"
#include "util/system.h"

namespace blocklab {

LoadedRun load_run(const std::string& run_dir, const std::vector<std::string>& overrides, WeightsChoice which) {
  RunDir run(run_dir, /*create=*/false);
  if (!run.has("config.toml")) throw UserError(fmt::format("{}: not a run directory (no config.toml)", run_dir));
  Config cfg = Config::load_for_evaluation(run.file("config.toml"), overrides);
  set_threads(cfg.train.threads);
  const torch::Device device(resolve_device(cfg.train.device));
  std::string name = which == WeightsChoice::Average && run.has("ema.safetensors") ? "ema.safetensors" : "model.safetensors";
  const auto run_config = read_file(run.file("config.toml"));  // as training wrote it, without the overrides
  std::map<std::string, std::string> meta;
  TensorMap weights;
  if (!run.has(name) && cfg.blocks_mode()) {
    // Blocks trained alone (`train --block K`): the model is assembled from their files.
    std::vector<std::string> files;
    const char* leaf = which == WeightsChoice::Average && run.has("blocks/0/ema.safetensors") ? "ema" : "model";
    for (int b = 0; b < cfg.model.blocks; ++b) {
      files.push_back(run.file(fmt::format("blocks/{}/{}.safetensors", b, leaf)));
      if (!std::filesystem::exists(files.back()))
        throw UserError(fmt::format("{}: no {} and no {} (is block {} trained?)", run_dir, name, files.back(), b));
    }
    weights = assemble_blocks(files, run_config);
    name = fmt::format("blocks/*/{}.safetensors", leaf);
    meta["config"] = run_config;
  } else {
    if (!run.has(name)) throw UserError(fmt::format("{}: no {} (is the run finished?)", run_dir, name));
    weights = load_safetensors(run.file(name), &meta);
  }
  if (meta["config"] != run_config)
    throw UserError(fmt::format("{}: weights of another run ({}); {}/config.toml is {}", run.file(name),
                                meta["config"].empty() ? std::string("no config recorded") : describe_weights(meta["config"]),
                                run_dir, describe_weights(run_config)));
  auto data = load_dataset(cfg);
  auto family = make_family(cfg, data, device);
  load_weights(family->model(), weights, run.file(name));
  return {run, cfg, data, std::move(family), name, name.find("ema.safetensors") != std::string::npos};
}

}  // namespace blocklab
