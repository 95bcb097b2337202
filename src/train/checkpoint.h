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
  int held_block = -1;        // resident schedule: the block in memory (the others' state is in their files)
};

/// Parameters (and buffers) by their addresses, `shared.head.weight`, `blocks.0.layers.1...`.
TensorMap named_tensors(const torch::nn::Module& model);
/// Copies `weights` into the model; UserError naming `source` on a missing, extra or misshapen tensor.
/// Tensors whose names start with `fresh_prefix` may be missing (a block not trained yet keeps
/// its initialization).
void load_weights(torch::nn::Module& model, const TensorMap& weights, const std::string& source,
                  const std::string& fresh_prefix = "");

/// A run's whole progress by name: `model.<name>`, `optim.<name>.<leaf>`, `ema.<name>`.
TensorMap training_state(const torch::nn::Module& model, const AdamW& opt, const Ema* ema);
/// Restores training_state(); UserError naming `source` on anything missing (outside
/// `fresh_prefix`), foreign or misshapen.
void restore_training_state(const TensorMap& all, torch::nn::Module& model, AdamW& opt, Ema* ema,
                            const std::string& source, const std::string& fresh_prefix = "");

void save_checkpoint(const std::string& path, const torch::nn::Module& model, const AdamW& opt,
                     const CheckpointState& state, const Ema* ema = nullptr);
/// Reads a checkpoint's state and tensors (for restore_training_state). UserError as load_checkpoint.
CheckpointState read_checkpoint(const std::string& path, const std::string& expected_config, TensorMap& tensors);
/// Restores model and optimizer. UserError naming the file on anything missing or malformed, and,
/// when `expected_config` is given, on a checkpoint of another run (nothing is loaded then).
/// `ema`: restored too (UserError if the checkpoint has none); without it, averages are refused.
CheckpointState load_checkpoint(const std::string& path, torch::nn::Module& model, AdamW& opt,
                                const std::string& expected_config = "", Ema* ema = nullptr);

/// "mode e2e, B=3, L=6, seed 0": what a resolved config's weights are, for messages.
std::string describe_weights(const std::string& config_toml);

}  // namespace blocklab
