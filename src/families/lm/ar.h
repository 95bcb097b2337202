// Autoregressive byte-level language modelling, end-to-end or as DiffusionBlocks (paper §5.4,
// App. B, E.4; docs/language-models.md).
//
// End-to-end: a causal transformer trained by next-byte cross-entropy; generation with a KV cache.
// Blocks: the target of position i is the L2-normalized embedding of byte i+1, noised with EDM's
// sigma; a window of T bytes becomes [clean context (T-1) ; noisy targets (T-1)] under the
// block-causal mask of clean_noisy_mask(), and block b's denoiser D = c_skip z + c_out F is read
// out by the head as byte logits, trained by cross-entropy weighted by lambda(sigma) (as the
// classifier). Generation runs diffusion.inference_steps Euler steps per byte (the paper uses
// 4) down the CDF-uniform levels, each by the block that owns its sigma; every block keeps its
// own KV cache of the clean context.
#pragma once
#include "families/lm/language_model.h"

namespace blocklab {

class AutoregressiveLM : public LanguageModel {
 public:
  AutoregressiveLM(const Config& cfg, const DataShape& shape, const torch::Device& device,
                   const std::vector<int64_t>& held = {});

  Loss loss(const Batch& batch, int block, uint64_t seed) override;
  /// End-to-end: the next-byte cross-entropy in bits. Blocks: the cross-entropy of the distribution
  /// generation samples each byte from (the last step's logits after one chain from noise), and,
  /// as an alternative, of the first step's (block 0 at sigma_max: the context alone).
  torch::Tensor bits(const torch::Tensor& x) override;
  std::vector<std::string> alternative_names() const override;
  std::string bits_meaning() const override;
  std::vector<std::string> generate(const std::vector<std::string>& prompts, int64_t n, const GenerateOptions& opt,
                                    const TextSink& sink = {}) override;

  /// End-to-end: logits [N, T, 256] of tokens [N, T], row i predicting byte i+1.
  torch::Tensor next_byte_logits(const torch::Tensor& tokens);
  /// Blocks: block `block`'s logits [N, T, 256] for noisy targets z [N, T, d] at sigma [N] (one per
  /// window) after the context tokens [N, T].
  torch::Tensor denoise_logits(const torch::Tensor& context, const torch::Tensor& z, const torch::Tensor& sigma, int block);
  /// Generation's denoiser call: block `block`'s logits [N, 1, 256] for one noisy target z [N, 1, d]
  /// at level sigma, at position `at`, after the clean context in `caches` (left unchanged).
  torch::Tensor next_byte_denoise(BlockCaches& caches, const torch::Tensor& z, double sigma, int block, int64_t at);
  /// The denoising targets of bytes [..]: normalized embeddings [.., d] (gradients reach the table).
  torch::Tensor targets(const torch::Tensor& bytes);
  /// The normalized embeddings of the 256 bytes [256, d].
  torch::Tensor embeddings();
  torch::Tensor sample_sigmas(int block, int64_t n, uint64_t seed, const torch::Device& device) const;

 private:
  /// Block `block`'s denoised logits for the noisy tokens' hidden states h [N, T, d].
  torch::Tensor readout(const torch::Tensor& h, const torch::Tensor& z, const torch::Tensor& sigma,
                        const torch::Tensor& noise_cond);
};

}  // namespace blocklab
