// A finished run, loaded for evaluation, sampling or scoring: its config (with the overrides
// evaluation may make), its data, and its family with the trained weights.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "families/family.h"
#include "io/config.h"
#include "io/run_dir.h"

namespace blocklab {

/// Which weights: the moving average when the run kept one (what sampling uses), or the raw ones.
enum class WeightsChoice { Average, Raw };

struct LoadedRun {
  RunDir run;
  Config cfg;
  std::shared_ptr<const Dataset> data;
  std::unique_ptr<Family> family;
  std::string weights_file;  // "ema.safetensors", "model.safetensors", or per-block files
  bool averaged = false;     // the weights are the moving average
};

/// UserError naming the directory or file when the run is unfinished, foreign or malformed.
LoadedRun load_run(const std::string& run_dir, const std::vector<std::string>& overrides, WeightsChoice which);

}  // namespace blocklab
