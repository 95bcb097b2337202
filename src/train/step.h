// One optimizer step, end-to-end or block-wise: the heart of training on one screen.
// The trainer feeds it batches; `blocklab bench step` and the profiler time it alone.
#pragma once
#include <functional>
#include <memory>

#include "families/family.h"
#include "io/config.h"
#include "train/adamw.h"
#include "train/grad_sync.h"
#include "train/plan.h"

namespace blocklab {

struct StepStats {
  double loss, plain;  // the loss backward ran on, and the family's unweighted loss
  int block;           // -1 end-to-end
  double lr, grad_norm;
};

/// Data parallel inside a block: this process is replica `index` of `count` of its block, trains on
/// its share of each batch, and `mean` averages its block's gradients across the replicas.
struct Replication {
  int index = 0, count = 1;
  std::function<void()> mean;
};

class StepRunner {
 public:
  /// `lr_steps`: the steps the learning-rate schedule spans. `all_reduce`: set in a process of a
  /// distributed run whose blocks share synchronised modules (their gradients are summed across
  /// processes every step).
  StepRunner(Family& family, AdamW& opt, const Config& cfg, int64_t lr_steps, AllReduce all_reduce = nullptr,
             Replication replication = {});

  /// One optimizer step over `updates` (one block's, the network's, or a synchronous round's),
  /// update i on batches[i]; all randomness comes from (seed, data step). One StepStats per update.
  /// Throws UserError if a loss or the gradient norm is not finite (nothing is updated then).
  std::vector<StepStats> run(const std::vector<Batch>& batches, const std::vector<Update>& updates);
  /// The interleaved (or end-to-end) schedule's step `step`: benchmarks and the profiler.
  StepStats run(const Batch& batch, int64_t step);

  /// Called between forward and backward (memory benchmarks read the saved activations here).
  std::function<void()> after_forward;

 private:
  Family& family_;
  AdamW& opt_;
  const Config& cfg_;
  int64_t lr_steps_;
  AllReduce all_reduce_;
  Replication replication_;
  std::unique_ptr<SharedGradients> shared_;  // when several updates' shared gradients are summed
};

/// The optimizer of `model` under `cfg`: AdamW with the config's weight decay, on every
/// parameter or on Linear/Conv matrices only (train.decay).
AdamW make_optimizer(torch::nn::Module& model, const Config& cfg);

/// Updates per block (end-to-end: steps) for the config's epochs: blocks mode trains B times the
/// steps of end-to-end for the same epochs (equal compute).
int64_t updates_per_block(const Config& cfg, int64_t steps_per_epoch);
/// Steps of the interleaved (or end-to-end) schedule: updates_per_block times B in blocks mode.
int64_t total_steps(const Config& cfg, int64_t steps_per_epoch);

/// The seed of global step `data_step`: torch's generator is seeded with it, and the family draws
/// its noise levels from it (`bench twin` hands the same seeds to its PyTorch twin).
uint64_t step_seed(const Config& cfg, int64_t data_step);

/// The block trained at global step `step` (-1 end-to-end): every round of B steps visits each
/// block once, in an order drawn from (seed, round), so each block gets exactly total/B updates.
int block_for_step(const Config& cfg, int64_t step);

}  // namespace blocklab
