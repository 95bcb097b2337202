// Masked diffusion over bytes (MD4, Shi et al. 2024; MDLM, Sahoo et al. 2024) as
// DiffusionBlocks (paper §5.3, App. D; docs/language-models.md).
//
// Masking time t in [0, 1], linear schedule alpha(t) = 1 - t: at time t each byte is replaced by
// the mask token with probability t. The model predicts the original bytes of the masked
// positions; the loss is the ELBO's integrand, the cross-entropy summed over masked positions
// weighted by -alpha'(t) / (1 - alpha(t)) = 1/t, with t drawn antithetically over a batch.
// Blocks: the schedule is cut into B equal decrements of alpha (t_b = b/B) by the same Partition
// as the EDM families (UniformTime), widened by the overlap; block b trains on its own range of t
// and serves it when generating. Generation unmasks iteratively from t = 1 to 0.
#pragma once
#include "families/lm/language_model.h"

namespace blocklab {

class MaskedDiffusionLM : public LanguageModel {
 public:
  static constexpr double kMinTime = 1e-3;  // training times are floored here: the 1/t weight stays finite

  MaskedDiffusionLM(const Config& cfg, const DataShape& shape, const torch::Device& device,
                    const std::vector<int64_t>& held = {});

  Loss loss(const Batch& batch, int block, uint64_t seed) override;
  /// The ELBO in bits per byte: the integral over t by the midpoint rule at mdm.eval_times times,
  /// each served by the block that owns it, one mask draw each.
  torch::Tensor bits(const torch::Tensor& x) override;
  std::string bits_meaning() const override;
  std::vector<std::string> generate(const std::vector<std::string>& prompts, int64_t n, const GenerateOptions& opt,
                                    const TextSink& sink = {}) override;

  int64_t mask_token() const { return lm_->opt.vocab; }
  /// Byte logits [N, T, 256] of block `block` (-1: all layers) for tokens with masks [N, T] at times t [N].
  torch::Tensor logits(const torch::Tensor& tokens, const torch::Tensor& t, int block);
  /// The ELBO's integrand at times t [N] with masks from torch's generator: (1/t) times the
  /// cross-entropy summed over masked positions, per byte, in nats [N]; and the masked positions' mean cross-entropy.
  std::pair<torch::Tensor, torch::Tensor> elbo_term(const torch::Tensor& x, const torch::Tensor& t, int block);
  /// Antithetic times for a batch: t_i = lo + (hi - lo) frac(u + i/n), u from `seed`, over block's
  /// widened range (or [0, 1] end-to-end), floored at kMinTime.
  torch::Tensor sample_times(int block, int64_t n, uint64_t seed, const torch::Device& device) const;
};

}  // namespace blocklab
