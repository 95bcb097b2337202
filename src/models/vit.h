// A Vision Transformer whose layers are grouped into blocks, for both training modes.
//
//   e2e:    tokens = [cls ; patches] + pos -> all L layers -> final LN -> token 0 -> head
//   blocks: tokens = [c_in z_sigma ; patches] + pos -> the L/B layers of one block
//           -> final LN -> token 0 = h   (the noisy label vector takes the class-token slot)
//   blocks, label beside cls: tokens = [cls ; c_in z_sigma ; patches] + pos, h = token 0
//
// Parameters have addresses: `blocks.{b}.layers.{i}.*` belong to one block, `shared.*` are the
// input/output modules every block uses (docs/method.md, "What the blocks share"). Blocks sit in a
// dictionary keyed by their index, so a model that holds only some blocks still names them so.
#pragma once
#include <torch/torch.h>

#include "models/layers.h"
#include "models/readout.h"

namespace blocklab {

struct ViTOptions : ImageTransformerOptions {
  // Where the noisy label enters in blocks mode: in the class-token slot, read out from itself
  // (the reference code), or as an extra token beside a clean class token that is read out (the
  // paper's App. B); docs/method.md.
  bool label_beside_cls = false;
  int64_t lead_tokens() const { return label_beside_cls ? 2 : 1; }
};

/// The modules every block shares.
struct SharedIOImpl : torch::nn::Module {
  explicit SharedIOImpl(const ViTOptions& o);
  torch::nn::Conv2d patch_embed{nullptr};
  torch::Tensor pos_embed, cls_token;  // [1, lead+P, d], [1, 1, d]
  torch::nn::Embedding label_embed{nullptr};
  NoiseEmbedder noise_embed{nullptr};
  torch::nn::LayerNorm final_norm{nullptr};
  AdaLN out_ada{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(SharedIO);

struct ViTImpl : torch::nn::Module {
  explicit ViTImpl(const ViTOptions& o);

  /// Conditioning vector for noise embedding input c_noise [N], of block b's input modules.
  torch::Tensor condition(const torch::Tensor& c_noise, int64_t b);
  /// Runs blocks [first, last) over the lead tokens ([N, d] each) and the images' patches;
  /// returns the last layer's tokens, [N, T, d].
  torch::Tensor encode(const torch::Tensor& images, const std::vector<torch::Tensor>& lead, const torch::Tensor& cond,
                       int64_t first_block, int64_t last_block);
  /// Block b's final norm of token 0 of `tokens` (encode's output): [N, d].
  torch::Tensor features(const torch::Tensor& tokens, int64_t b);
  /// The lead tokens of block b's denoiser for a scaled noisy label c_in z, [N, d].
  std::vector<torch::Tensor> label_lead(const torch::Tensor& scaled_label, int64_t b);
  /// Block b's readout (final norm of token 0, `skip`'s output combination in blocks mode, the
  /// output adaLN; models/readout.h) and classifier: logits [N, K] from encode's tokens.
  torch::Tensor logits(const torch::Tensor& tokens, const torch::Tensor& cond, int64_t b, const ReadoutSkip& skip = {});
  /// End-to-end classifier: class token, every layer, a constant noise condition.
  torch::Tensor forward(const torch::Tensor& images);

  /// Block b; a logic error if this model does not hold it (and streams none).
  Block block(int64_t b);
  /// Block b as initialized (layers, and its own input/output modules when independent).
  Block make_block(int64_t b) const;
  /// From now on the model holds one block at a time: asked for another, it builds it and lets
  /// `fill` load its weights.
  void stream_blocks(BlockFiller fill);
  /// The input/output modules block b uses (b < 0: end-to-end): the shared ones, or its own copy.
  SharedIO io(int64_t b);

  ViTOptions opt;
  SharedIO shared{nullptr};  // null when the blocks own their input/output modules
  // Independent blocks cannot learn a common target space: theirs is fixed, K random unit vectors
  // drawn once from the run's seed (docs/distributed.md). Undefined otherwise.
  torch::Tensor fixed_targets;  // [K, d]
  std::function<Block(int64_t)> stream;  // set by stream_blocks
  torch::nn::ModuleDict blocks{nullptr};  // keyed "0", "1", ...: parameters blocks.{b}.*
};
TORCH_MODULE(ViT);

}  // namespace blocklab
