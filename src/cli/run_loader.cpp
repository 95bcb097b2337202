#include "cli/run_loader.h"

#include <algorithm>
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
  const auto run_config = read_file(run.file("config.toml"));  // as training wrote it, without the overrides
  auto check_config = [run_config, run_dir](const std::string& file, std::map<std::string, std::string>& meta) {
    if (meta["config"] != run_config)
      throw UserError(fmt::format("{}: weights of another run ({}); {}/config.toml is {}", file,
                                  meta["config"].empty() ? std::string("no config recorded") : describe_weights(meta["config"]),
                                  run_dir, describe_weights(run_config)));
  };
  auto data = load_dataset(cfg);
  // Blocks trained apart (`launch`, `train --block K`) are loaded one at a time, as the evaluation
  // or the sampler reaches them: memory holds the shared modules and one block.
  const bool average = which == WeightsChoice::Average;
  const char* leaf = average && run.has("blocks/0/ema.safetensors") ? "ema" : "model";
  std::vector<std::string> files;
  for (int b = 0; cfg.blocks_mode() && b < cfg.model.blocks; ++b)
    files.push_back(run.file(fmt::format("blocks/{}/{}.safetensors", b, leaf)));
  const bool per_block = !files.empty() && std::all_of(files.begin(), files.end(), [](const std::string& f) {
    return std::filesystem::exists(f);
  });
  if (per_block) {
    auto family = make_family(cfg, data, device, 0);
    std::map<std::string, std::string> meta;
    load_weights(family->model(), load_safetensors(files[0], &meta), files[0]);
    check_config(files[0], meta);
    const auto outside = named_tensors(family->model());  // the shared modules, from block 0's file
    std::vector<bool> checked(files.size());  // each file's metadata and shared tensors, the first time
    family->stream_blocks([files, outside, check_config, device, checked](Block& block, int64_t b) mutable {
      const auto& file = files[size_t(b)];
      std::map<std::string, std::string> meta;
      const auto tensors = load_safetensors(file, &meta);
      if (!checked[size_t(b)]) check_config(file, meta);
      const auto prefix = block_prefix(b);
      TensorMap own;
      for (const auto& [name, t] : tensors) {
        if (name.rfind(prefix, 0) == 0) own[name.substr(prefix.size())] = t;
        else if (!checked[size_t(b)] && name.rfind("blocks.", 0) != 0)
          check_same_outside_blocks(outside, files[0], name, t, file);
      }
      checked[size_t(b)] = true;
      load_weights(*block, own, file);
      block->to(device);
    });
    return {run, cfg, data, std::move(family), fmt::format("blocks/*/{}.safetensors", leaf), std::string(leaf) == "ema"};
  }
  const std::string name = average && run.has("ema.safetensors") ? "ema.safetensors" : "model.safetensors";
  if (!run.has(name)) {
    std::string missing;  // blocks trained apart: the first that is not
    for (size_t b = 0; b < files.size() && missing.empty(); ++b)
      if (!std::filesystem::exists(files[b])) missing = fmt::format("; no {} either (is block {} trained?)", files[b], b);
    throw UserError(fmt::format("{}: no {} (is the run finished?){}", run_dir, name, missing));
  }
  std::map<std::string, std::string> meta;
  const auto weights = load_safetensors(run.file(name), &meta);
  check_config(run.file(name), meta);
  auto family = make_family(cfg, data, device);
  load_weights(family->model(), weights, run.file(name));
  return {run, cfg, data, std::move(family), name, name == "ema.safetensors"};
}

}  // namespace blocklab
