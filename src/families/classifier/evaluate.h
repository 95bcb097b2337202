// Test-set evaluation of the classifier family, in either mode. For blocks mode it reports the
// accuracy after every inference step and each block's teacher-forced accuracy (the block given
// the true label noised at its own sigma), which is how one sees which block limits the chain.
#pragma once
#include <cmath>

#include <nlohmann/json.hpp>

#include "families/classifier/classifier.h"

namespace blocklab {

struct EvalReport {
  int64_t images = 0;
  double accuracy = 0;  // of the final prediction
  // Blocks mode with an inference temperature other than 1: the final accuracy when E[y|z]
  // (temperature 1, the reference sampler) is passed between steps instead; NaN otherwise.
  double accuracy_expected_embedding = std::nan("");
  double ms_per_image = 0;  // inference wall time
  std::vector<double> step_sigmas, step_accuracy;  // blocks mode: after each Euler step
  std::vector<int> step_blocks;
  std::vector<double> teacher_sigmas, teacher_forced;  // blocks mode: per block
  std::vector<std::vector<int64_t>> confusion;  // [true class][predicted class] counts of the final prediction

  /// The family-neutral form: headline accuracy, the reference sampler as an alternative, lines.
  Evaluation to_evaluation() const;
};

/// Evaluates on `split`; the inference noise of batch i comes from derive_seed(seed, Eval, i) and
/// the teacher-forced noise from its own stream, so every sampler sees the same draws.
EvalReport evaluate_classifier(DenoisingClassifier& task, const Config& cfg, const Dataset& data, Split split,
                               uint64_t seed);

}  // namespace blocklab
