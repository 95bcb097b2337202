// Training steps on a fixed synthetic batch (random data of the family's kind): what `bench
// step`, the profiler, its overhead benchmark and the demo's step-time row time. Data does not
// change the cost of a step, and a synthetic batch keeps timing free of the data set.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "io/config.h"
#include "train/step.h"

namespace blocklab {

class SyntheticTraining {
 public:
  /// `cfg` must be validated. The model, optimizer and batch live on cfg.train.device.
  explicit SyntheticTraining(const Config& cfg);
  ~SyntheticTraining();
  SyntheticTraining(const SyntheticTraining&) = delete;
  SyntheticTraining& operator=(const SyntheticTraining&) = delete;

  /// Runs the next global step (in blocks mode, step s trains block_for_step(s)).
  StepStats step();
  /// Steps in which every block is trained once: B in blocks mode, 1 end-to-end.
  int round() const;
  bool cuda() const;
  /// The step runner, for hooks such as `after_forward`.
  StepRunner& runner();
  /// The family (its model), the fixed batch every step trains on, and the steps taken so far
  /// (the next step's global index): `bench twin` hands them to its PyTorch twin.
  Family& family();
  const Batch& batch() const;
  int64_t steps_taken() const { return step_; }

 private:
  struct State;
  Config cfg_;
  std::unique_ptr<State> s_;
  int64_t step_ = 0;
};

/// Median milliseconds of an end-to-end step and of a block step of `cfg`, measured in this
/// process with the two alternating (one end-to-end step, then one round of B block steps, `rounds`
/// times, after a warm-up round): a ratio that load on the machine shifts for both alike.
struct StepTimes {
  double e2e_ms = 0, block_ms = 0;
};
StepTimes alternating_step_times(const Config& cfg, int rounds);
/// The same for several variants of the same two models (e.g. attention kernels): each round runs
/// every variant's steps in turn, after calling its setter. One StepTimes per variant.
std::vector<StepTimes> alternating_step_times(const Config& cfg, int rounds,
                                              const std::vector<std::function<void()>>& variants);

}  // namespace blocklab
