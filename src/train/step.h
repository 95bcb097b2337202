// One optimizer step, end-to-end or block-wise: the heart of training on one screen.
// The trainer feeds it batches; `blocklab bench step` and the profiler time it alone.
#pragma once
#include <functional>

#include "families/family.h"
#include "io/config.h"
#include "train/adamw.h"

namespace blocklab {

struct StepStats {
  double loss, plain;  // the loss backward ran on, and the family's unweighted loss
  int block;           // -1 end-to-end
  double lr, grad_norm;
};

class StepRunner {
 public:
  StepRunner(Family& family, AdamW& opt, const Config& cfg, int64_t total_steps);

  /// Trains on `batch` as global step `step`; all randomness comes from (seed, step).
  /// Throws UserError if the loss or the gradient norm is not finite (nothing is updated then).
  StepStats run(const Batch& batch, int64_t step);

  /// Called between forward and backward (memory benchmarks read the saved activations here).
  std::function<void()> after_forward;

 private:
  Family& family_;
  AdamW& opt_;
  const Config& cfg_;
  int64_t total_;
};

/// The optimizer of `model` under `cfg`: AdamW with the config's weight decay, on every
/// parameter or on Linear/Conv matrices only (train.decay).
AdamW make_optimizer(torch::nn::Module& model, const Config& cfg);

/// Blocks mode trains B times the steps of end-to-end for the same epochs (equal compute).
int64_t total_steps(const Config& cfg, int64_t steps_per_epoch);

/// The block trained at global step `step` (-1 end-to-end): every round of B steps visits each
/// block once, in an order drawn from (seed, round), so each block gets exactly total/B updates.
int block_for_step(const Config& cfg, int64_t step);

}  // namespace blocklab
