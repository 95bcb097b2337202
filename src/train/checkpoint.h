// Checkpoints: one safetensors file holding the model (`model.<name>`), the optimizer state
// (`optim.<name>.exp_avg|exp_avg_sq|step`) and the step in its metadata. One file, one atomic
// rename: a crash leaves the previous checkpoint whole. RNG and data order are functions of
// (seed, step), so the step is all a resumed run needs to continue exactly.
#pragma once
#include <torch/torch.h>

#include "io/safetensors.h"
#include "train/adamw.h"

namespace blocklab {

/// Parameters (and buffers) by their addresses, `shared.head.weight`, `blocks.0.layers.1...`.
TensorMap named_tensors(const torch::nn::Module& model);
/// Copies `weights` into the model; UserError naming `source` on a missing, extra or misshapen tensor.
void load_weights(torch::nn::Module& model, const TensorMap& weights, const std::string& source);

void save_checkpoint(const std::string& path, const torch::nn::Module& model, const AdamW& opt, int64_t step);
/// Restores model and optimizer; returns the step the checkpoint was taken after.
int64_t load_checkpoint(const std::string& path, torch::nn::Module& model, AdamW& opt);

}  // namespace blocklab
