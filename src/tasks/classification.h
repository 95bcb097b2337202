// Classification as denoising (DiffusionBlocks for a ViT, reference §1.5-1.7).
//
// The target y is the L2-normalized embedding of the label. Block b learns
// D_b(z_sigma; x, sigma) ~ y for sigma in its range, with EDM preconditioning, trained by
// cross-entropy of the head's logits weighted by lambda(sigma). Inference walks the CDF-uniform
// schedule from sigma_max down, one Euler step per noise level, each by the block that owns it.
// The end-to-end baseline is the same ViT with a class token and plain cross-entropy.
#pragma once
#include <torch/torch.h>

#include <optional>

#include "data/image_data.h"
#include "io/config.h"
#include "models/vit.h"
#include "schedule/noise.h"

namespace blocklab {

struct Loss {
  torch::Tensor value;  // what backward runs on
  torch::Tensor ce;     // unweighted mean cross-entropy, for logging
};

/// Logits after every inference step: step i ran block `block_of[i]` at sigma[i].
struct StepLogits {
  std::vector<double> sigmas;
  std::vector<int> blocks;
  std::vector<torch::Tensor> logits;
};

/// Weights over classes that turn logits into the expected embedding passed between steps.
torch::Tensor class_weights(const torch::Tensor& logits, double temperature);

/// The ViT of a config, for a data set with `classes` labels.
ViTOptions vit_options(const Config& cfg, int64_t classes);

class DenoisingClassifier {
 public:
  DenoisingClassifier(ViT model, const Config& cfg);

  /// The denoising target: normalized label embeddings, [N, d] (gradients reach the table).
  torch::Tensor target(const torch::Tensor& labels);
  /// Logits of block `block` for noisy targets z at per-sample noise levels sigma [N].
  torch::Tensor denoise_logits(const torch::Tensor& images, const torch::Tensor& z, const torch::Tensor& sigma,
                               int block);

  Loss e2e_loss(const Batch& b);
  /// The block-wise objective: only block `block` and the shared modules are in the graph.
  Loss block_loss(const Batch& b, int block, const torch::Tensor& sigma);

  /// Blocks-mode prediction: the Euler chain over `steps` noise levels (reference §1.7), passing
  /// softmax(logits / temperature) @ embeddings between steps (default: the configured temperature).
  StepLogits predict_steps(const torch::Tensor& images, int steps, std::optional<double> temperature = std::nullopt);
  /// Block `block` given the true label, noised at sigma: its accuracy with a perfect input.
  torch::Tensor teacher_forced_logits(const torch::Tensor& images, const torch::Tensor& labels, int block,
                                      double sigma);

  ViT& model() { return model_; }
  const NoiseSchedule& schedule() const { return schedule_; }

 private:
  torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels);
  ViT model_;
  NoiseSchedule schedule_;
  DiffusionConfig diffusion_;
  int blocks_;
  double label_smoothing_;
};

}  // namespace blocklab
