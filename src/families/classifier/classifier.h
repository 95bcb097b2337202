// Classification as denoising: DiffusionBlocks for a ViT (paper §5.1, App. B; docs/method.md).
//
// The target y is the L2-normalized embedding of the label. Block b learns
// D_b(z_sigma; x, sigma) ~ y for sigma in its range, with EDM preconditioning, trained by
// cross-entropy of the head's logits weighted by lambda(sigma). Inference walks the CDF-uniform
// noise levels from sigma_max down, one Euler step per level, each by the block that owns it.
// The end-to-end baseline is the same ViT with a class token and plain cross-entropy.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <optional>

#include "families/family.h"
#include "io/config.h"
#include "models/vit.h"
#include "schedule/chain.h"
#include "schedule/noise.h"
#include "schedule/precond.h"

namespace blocklab {

/// The ViT of a config for data of `shape`. UserError if the patch does not tile the images.
ViTOptions vit_options(const Config& cfg, const DataShape& shape, const std::vector<int64_t>& held = {});

class DenoisingClassifier : public Family {
 public:
  /// A fresh ViT for data of `shape` on `device`, holding the blocks `held` (empty: all).
  DenoisingClassifier(const Config& cfg, const DataShape& shape, const torch::Device& device,
                      const std::vector<int64_t>& held = {});
  /// Around a ViT built elsewhere (tests; a model assembled from saved blocks).
  DenoisingClassifier(const Config& cfg, ViT vit);

  torch::nn::Module& model() override { return *vit_; }
  Loss loss(const Batch& batch, int block, uint64_t seed) override;
  Evaluation evaluate(const Dataset& data, Split split, uint64_t seed) override;
  void stream_blocks(BlockFiller fill) override { vit_->stream_blocks(std::move(fill)); }

  /// The denoising target: normalized label embeddings, [N, d] (gradients reach the table).
  torch::Tensor target(const torch::Tensor& labels);
  /// The normalized embedding table [K, d].
  torch::Tensor embeddings();
  /// Block `block`'s denoised estimate D = c_out h + c_skip z for noisy targets z [N, d] at
  /// per-example noise levels sigma [N].
  torch::Tensor denoise(const torch::Tensor& images, const torch::Tensor& z, const torch::Tensor& sigma, int block);
  /// The same, read out as class logits [N, K].
  torch::Tensor denoise_logits(const torch::Tensor& images, const torch::Tensor& z, const torch::Tensor& sigma,
                               int block);

  Loss e2e_loss(const Batch& b);
  /// The block-wise objective: only block `block` and the shared modules are in the graph.
  Loss block_loss(const Batch& b, int block, const torch::Tensor& sigma);
  /// Per-example sigma in the block's widened range, drawn in double from `seed`.
  torch::Tensor sample_sigmas(int block, int64_t n, uint64_t seed, const torch::Device& device) const;

  /// Blocks-mode prediction: the chain over `steps` noise levels from fresh noise (torch's
  /// generator), passing class_weights(logits, temperature) @ embeddings between steps.
  ChainResult predict_steps(const torch::Tensor& images, int steps, std::optional<double> temperature = std::nullopt);
  /// The chain's start: z at sigma_max for n examples, drawn from torch's generator.
  torch::Tensor start_noise(int64_t n, const torch::TensorOptions& options);
  /// Block `block` given the true label noised at sigma: its accuracy with a perfect input.
  torch::Tensor teacher_forced_logits(const torch::Tensor& images, const torch::Tensor& labels, int block,
                                      double sigma);
  /// The noise level at which block b is examined: the first inference sigma it owns, else the
  /// log-midpoint of its nominal interval.
  double probe_sigma(int block) const;

  ViT& vit() { return vit_; }
  const Partition& partition() const { return partition_; }

 private:
  // Block `block`'s layers run on the noisy label and the images: their tokens [N, T, d], the
  // noise condition, and sigma's preconditioning.
  struct Encoded {
    torch::Tensor tokens, cond;
    Precond<torch::Tensor> pc;
  };
  Encoded encode(const torch::Tensor& images, const torch::Tensor& z, const torch::Tensor& sigma, int block);
  torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels);

  Config cfg_;
  ViT vit_{nullptr};
  Partition partition_;
};

}  // namespace blocklab
