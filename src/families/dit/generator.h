// Image generation as DiffusionBlocks: a class-conditional DiT trained with EDM (paper §5.2;
// Karras et al. 2022), end-to-end or one block at a time (docs/method.md, "The DiT family").
//
// Pixels are standardized by the training set's mean and spread and scaled by sigma_data, so the
// data's spread is sigma_data by construction and EDM's preconditioning holds as designed.
// Training: x + sigma eps with sigma log-normal (end-to-end: the whole range; block b: its own
// range), D = c_skip z + c_out F(c_in z; c_noise, y), loss lambda(sigma) |D - x|^2 per example.
// Labels are replaced by "no label" with probability dit.label_dropout, for classifier-free guidance.
// Sampling integrates the probability-flow ODE (Euler or Heun) and each step runs only the block
// that owns its noise level; end-to-end runs every layer at every step.
#pragma once
#include <torch/torch.h>

#include "data/image_data.h"
#include "eval/fd.h"
#include "families/family.h"
#include "models/dit.h"
#include "schedule/noise.h"
#include "schedule/sampler.h"

namespace blocklab {

/// The DiT of a config for images of `shape`. UserError if the patch does not tile the images.
DiTOptions dit_options(const Config& cfg, const DataShape& shape, const std::vector<int64_t>& held = {});

struct SamplingOptions {
  int steps = 32;
  Sampler sampler = Sampler::Euler;
  SigmaSchedule schedule = SigmaSchedule::Cdf;
  double guidance = 1.0;  // D = D(no label) + g (D(y) - D(no label)); 1 runs the conditional model alone
  static SamplingOptions of(const Config& cfg);
  nlohmann::json to_json() const;
  std::string describe() const;  // "euler, 32 steps on cdf levels, guidance 2"
};

/// Generated images and what they cost.
struct Generated {
  torch::Tensor images;  // uint8 [N, C, H, W], on the CPU
  double layer_evaluations_per_image = 0;  // transformer layers run per image (CFG counts both passes)
  double denoiser_calls_per_image = 0;
  double ms_per_image = 0;
};

/// Generated images scored by Fréchet distance: the report, what sampling cost, the entries for
/// summary.json (the report's, `fd_sampler`, the cost) and readable lines.
struct Scored {
  FrechetReport report;
  Generated generated;
  nlohmann::json summary;
  std::vector<std::string> lines;
};

class ImageGenerator : public Family {
 public:
  /// A fresh DiT for images of `shape` whose training pixels have `pixel_mean` and `pixel_std` (in [0, 1]).
  ImageGenerator(const Config& cfg, const DataShape& shape, double pixel_mean, double pixel_std,
                 const torch::Device& device, const std::vector<int64_t>& held = {});

  torch::nn::Module& model() override { return *dit_; }
  Loss loss(const Batch& batch, int block, uint64_t seed) override;
  /// Generates dit.eval_samples images (classes in turn) and scores them by Fréchet distance
  /// against `split` (src/eval/fd.h). Needs an image data set.
  Evaluation evaluate(const Dataset& data, Split split, uint64_t seed) override;
  void stream_blocks(BlockFiller fill) override { dit_->stream_blocks(std::move(fill)); }

  /// D(z; sigma, y) of block `block` (-1: all layers), z [N, C, H, W], sigma [N], labels [N].
  torch::Tensor denoise(const torch::Tensor& z, const torch::Tensor& sigma, const torch::Tensor& labels, int block);
  /// Classifier-free guidance (Ho & Salimans 2022): D(no label) + g (D(y) - D(no label)), both
  /// passes in one batch; g = 1 runs the conditional model alone. sigma: one level for all.
  torch::Tensor guided_denoise(const torch::Tensor& z, double sigma, const torch::Tensor& labels, int block, double guidance);
  /// Images of classes `labels` [N] (int64), noise from `seed`, in batches of `batch`; progress
  /// to stderr when `progress` names the work.
  Generated generate(const torch::Tensor& labels, const SamplingOptions& opt, uint64_t seed, int64_t batch = 250,
                     const std::string& progress = "");
  /// `n` images, the classes in turn, scored against `split` of `data` (src/eval/fd.h).
  Scored score(const ImageData& data, Split split, int64_t n, const SamplingOptions& opt, uint64_t seed,
               const FrechetOptions& fd = {}, const std::string& progress = "generate");
  /// The noise levels a sampler visits, descending from sigma_max.
  std::vector<double> levels(const SamplingOptions& opt) const;
  /// The block that serves noise level sigma at sampling; -1 (all layers) end-to-end.
  int block_of(double sigma) const;
  /// Model space [N, C, H, W] -> pixels (uint8), and a batch's standardized images -> model space.
  torch::Tensor to_pixels(const torch::Tensor& x) const;
  torch::Tensor to_model(const torch::Tensor& standardized) const;

  DiT& dit() { return dit_; }
  const Partition& partition() const { return partition_; }

 private:
  torch::Tensor sample_sigmas(int block, int64_t n, uint64_t seed, const torch::Device& device) const;

  Config cfg_;
  DiT dit_{nullptr};
  Partition partition_;  // the config's B blocks
  Partition whole_;      // one block over the whole range: end-to-end training's levels
};

}  // namespace blocklab
