// The byte-level language-model transformer of both language-model families, its layers
// grouped into blocks (docs/language-models.md):
//
//   h = token_embed(x);  h = layers(h, c; mask, positions);  features = adaLN(LN(h), c);  logits = head(features)
//
// The condition c is per sequence (the masked-diffusion model's masking time) or per token (the
// autoregressive model in blocks mode: clean context tokens carry the learned `clean_cond`, noisy
// target tokens their sigma's embedding); the attention mask makes it bidirectional, causal or
// block-causal. Positions enter attention only, as rotary embeddings (RoPE, as Llama): a learned
// absolute position table left the masked-diffusion model unable to find a masked byte's
// neighbours within a CPU budget (docs/language-models.md). As in the DiT, adaLN is zero-initialized and so is the head: a fresh model
// predicts every byte with equal probability. Generation keeps a KVCache per layer.
#pragma once
#include <torch/torch.h>

#include "models/layers.h"

namespace blocklab {

struct LMOptions : StackOptions {
  int64_t vocab = 256;        // symbols the head predicts (bytes)
  int64_t input_vocab = 256;  // rows of the token table: the masked-diffusion model adds its mask token
  int64_t seq_len = 128;      // positions training sees
};

/// The modules every block shares: the token embedding, the conditions, the output.
struct LMSharedImpl : torch::nn::Module {
  explicit LMSharedImpl(const LMOptions& o);
  torch::nn::Embedding tokens{nullptr};  // [input_vocab, d]
  NoiseEmbedder noise_embed{nullptr};
  torch::Tensor clean_cond;              // [cond_dim]: the condition of tokens that carry no noise
  AdaLN out_ada{nullptr};
  torch::nn::Linear head{nullptr};       // d -> vocab, zero-initialized
};
TORCH_MODULE(LMShared);

/// Per block, one KVCache per layer (generation).
using BlockCaches = std::vector<std::vector<KVCache>>;

/// Additive attention masks [T, T] (0 where a query row sees a key column, -inf elsewhere).
torch::Tensor causal_mask(int64_t t, const torch::TensorOptions& options);
/// The autoregressive DiffusionBlocks mask over [clean (T) ; noisy (T)]: clean rows are causal over
/// the clean tokens; noisy token i sees the clean tokens 0..i (the context of the byte it
/// predicts, byte i+1) and itself (paper §5.4, Block Diffusion's vectorized training).
torch::Tensor clean_noisy_mask(int64_t t, const torch::TensorOptions& options);

struct LMImpl : torch::nn::Module {
  explicit LMImpl(const LMOptions& o);

  /// Token embeddings: tokens [N, T] -> [N, T, d].
  torch::Tensor embed(const torch::Tensor& tokens);
  /// Positions first..first+T-1 (int64 [T]) on the model's device.
  torch::Tensor positions(int64_t first, int64_t t) const;
  /// The condition of noise input c_noise [N]: [N, cond_dim].
  torch::Tensor noise_condition(const torch::Tensor& c_noise);
  /// The clean tokens' condition, [1, cond_dim] (broadcasts over sequences).
  torch::Tensor clean_condition();
  /// Blocks [first, last) on h [N, T, d] whose tokens sit at `positions` [T]; with `caches`, block b
  /// reads and (if keep) extends caches[b].
  torch::Tensor run(torch::Tensor h, const torch::Tensor& cond, const torch::Tensor& mask, const torch::Tensor& positions,
                    int64_t first, int64_t last, BlockCaches* caches = nullptr, bool keep = true);
  /// The output modules: adaLN(LN(h), cond) [N, T, d], and the logits of features [.., vocab].
  torch::Tensor features(const torch::Tensor& h, const torch::Tensor& cond);
  torch::Tensor logits(const torch::Tensor& features);

  Block block(int64_t b) { return fetch_block(blocks, b, stream); }
  Block make_block(int64_t b) const;
  /// From now on the model holds one block at a time (see ViTImpl::stream_blocks).
  void stream_blocks(BlockFiller fill);
  torch::Device device() const { return shared->tokens->weight.device(); }
  torch::TensorOptions float_options() const { return shared->tokens->weight.options(); }

  LMOptions opt;
  LMShared shared{nullptr};
  std::function<Block(int64_t)> stream;
  torch::nn::ModuleDict blocks{nullptr};
};
TORCH_MODULE(LM);

}  // namespace blocklab
