// Training steps on a fixed synthetic batch (random images and labels): what `bench step`, the
// profiler and its overhead benchmark time. Data does not change the cost of a step,
// and a synthetic batch keeps profiling free of the data set.
#pragma once
#include <memory>

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

 private:
  struct State;
  Config cfg_;
  std::unique_ptr<State> s_;
  int64_t step_ = 0;
};

}  // namespace blocklab
