// One optimizer step, end-to-end or block-wise: the heart of training on one screen.
// The trainer feeds it batches; `blocklab bench step` times and measures it alone.
#pragma once
#include <functional>

#include "io/config.h"
#include "tasks/classification.h"
#include "train/adamw.h"

namespace blocklab {

struct StepStats {
  double loss, ce;
  int block;  // -1 in e2e mode
  double lr, grad_norm;
};

class StepRunner {
 public:
  StepRunner(DenoisingClassifier& task, AdamW& opt, const Config& cfg, int64_t total_steps);

  /// Trains on `batch` as global step `step`; all randomness comes from (seed, step).
  /// Throws UserError if the loss or the gradient norm is not finite (nothing is updated then).
  StepStats run(const Batch& batch, int64_t step);

  /// Per-example sigma in block's widened range (reference §1.5, step 2), drawn in double.
  torch::Tensor sample_sigmas(int block, int64_t n, uint64_t seed, const torch::Device& device) const;

  /// Called between forward and backward (memory benchmarks read the saved activations here).
  std::function<void()> after_forward;

 private:
  DenoisingClassifier& task_;
  AdamW& opt_;
  const Config& cfg_;
  int64_t total_;
};

/// The optimizer of `model` under `cfg`: AdamW with the config's weight decay.
AdamW make_optimizer(torch::nn::Module& model, const Config& cfg);

/// Blocks mode trains B times the steps of end-to-end for the same epochs (equal compute).
int64_t total_steps(const Config& cfg, int64_t steps_per_epoch);

/// The block trained at global step `step`: every round of B steps visits each block once, in
/// an order drawn from (seed, round), so each block gets exactly total/B updates.
int block_for_step(int64_t step, int blocks, uint64_t seed);

/// Seed of everything random in step `step` (noise, sigma); a resumed run redraws the same.
uint64_t step_seed(uint64_t seed, int64_t step);

}  // namespace blocklab
