// Checkpoints: one safetensors file holding the model (`model.<name>`), the optimizer state
// (`optim.<name>.exp_avg|exp_avg_sq|step`), the weights' moving average when kept (`ema.<name>`) and, in its metadata, the step, the training seconds
// so far and the unlogged part of the metrics window. One file, one atomic rename: a crash leaves
// the previous checkpoint whole. RNG and data order are functions of (seed, step), so this is all
// a resumed run needs to continue exactly, metrics included.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "train/adamw.h"
#include "train/ema.h"

namespace blocklab {

/// What a checkpoint records beside the tensors.
struct CheckpointState {
  int64_t step = 0;           // steps taken
  double train_seconds = 0;   // training wall time up to `step`, over all invocations
  nlohmann::json window;      // the trainer's metric accumulators since the last logged line
  std::string config;         // the run's resolved config (TOML): what the weights belong to
};

/// Parameters (and buffers) by their addresses, `shared.head.weight`, `blocks.0.layers.1...`.
TensorMap named_tensors(const torch::nn::Module& model);
/// Copies `weights` into the model; UserError naming `source` on a missing, extra or misshapen tensor.
void load_weights(torch::nn::Module& model, const TensorMap& weights, const std::string& source);

void save_checkpoint(const std::string& path, const torch::nn::Module& model, const AdamW& opt,
                     const CheckpointState& state, const Ema* ema = nullptr);
/// Restores model and optimizer. UserError naming the file on anything missing or malformed, and,
/// when `expected_config` is given, on a checkpoint of another run (nothing is loaded then).
/// `ema`: restored too (UserError if the checkpoint has none); without it, averages are refused.
CheckpointState load_checkpoint(const std::string& path, torch::nn::Module& model, AdamW& opt,
                                const std::string& expected_config = "", Ema* ema = nullptr);

/// "mode e2e, B=3, L=6, seed 0": what a resolved config's weights are, for messages.
std::string describe_weights(const std::string& config_toml);

}  // namespace blocklab
