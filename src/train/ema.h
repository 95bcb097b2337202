// An exponential moving average of the weights (Polyak averaging, as DiT and EDM sample with).
// After each optimizer step, the parameters that step updated move their average:
//   avg = d avg + (1 - d) w,   d = min(decay, (1 + n) / (10 + n)),
// n the parameter's own update count, so early averages are not dominated by the random
// initialization. In blocks mode a step updates one block and the shared modules: only those
// average, each block over its own updates.
#pragma once
#include <torch/torch.h>

#include "io/safetensors.h"
#include "train/adamw.h"

namespace blocklab {

class Ema {
 public:
  /// Averages `model`'s parameters, which `opt` updates (it counts each one's updates).
  Ema(const torch::nn::Module& model, const AdamW& opt, double decay);
  /// After the optimizer step of `block` (-1: end-to-end, every parameter).
  void update(int block);
  /// The averages by parameter name, and restoring them (UserError naming `source`).
  TensorMap state() const;
  /// Averages of parameters under `fresh_prefix` may be missing (they keep the initial weights).
  void load(const TensorMap& state, const std::string& source, const std::string& fresh_prefix = "");
  /// The model's tensors with the averages in place of the parameters: what sampling loads.
  TensorMap weights() const;
  /// Exchanges the model's parameters and the averages (twice restores both).
  void swap();
  double decay() const { return decay_; }

 private:
  struct Entry {
    std::string name;
    torch::Tensor param, average;
    int block;        // -1: shared (updated at every step)
    size_t opt_index; // its place in the optimizer, for its update count
  };
  const torch::nn::Module& model_;
  const AdamW& opt_;
  double decay_;
  std::vector<Entry> entries_;
};

}  // namespace blocklab
