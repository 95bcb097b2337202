// Test-set evaluation of a trained classifier, in either mode. For blocks mode it reports the
// accuracy after every inference step and each block's teacher-forced accuracy (the block given
// the true label noised at its own sigma), which is how one sees which block limits the chain.
#pragma once
#include <cmath>

#include <nlohmann/json.hpp>

#include "data/image_data.h"
#include "tasks/classification.h"

namespace blocklab {

struct EvalReport {
  int64_t images = 0;
  double accuracy = 0;        // of the final prediction
  // Blocks mode with an inference temperature other than 1: the final accuracy when E[y|z]
  // (temperature 1, the reference sampler) is passed between steps instead; NaN otherwise.
  double accuracy_expected_embedding = std::nan("");
  double ms_per_image = 0;    // inference wall time
  std::vector<double> step_sigmas, step_accuracy;  // blocks mode: after each Euler step
  std::vector<int> step_blocks;
  std::vector<double> teacher_sigmas, teacher_forced;  // blocks mode: per block
  nlohmann::json to_json() const;
  std::string table() const;  // readable lines for the terminal
};

EvalReport evaluate(DenoisingClassifier& task, const Config& cfg, const ImageData& data, const torch::Device& device);

/// The noise level at which block b is examined: the first inference sigma it owns, else the
/// log-midpoint of its nominal interval.
double probe_sigma(const NoiseSchedule& schedule, int blocks, int block, int inference_steps);

}  // namespace blocklab
