// A class-conditional Diffusion Transformer (DiT, Peebles & Xie 2023) whose layers are grouped
// into blocks, for both training modes:
//
//   F(x; sigma, y) = unpatchify(head(adaLN(LN(layers(patchify(x) + pos), c))))
//   c = noise_embed(c_noise) + label_embed(y)        (label `classes` is "no label", for CFG)
//
// End-to-end, F runs every layer; block-wise, block b's F runs only its L/B layers between the
// same shared input and output modules (`shared.*`; docs/method.md, "What the blocks share"), so
// each block is a complete denoiser of the image for its own noise levels (paper §5.2). adaLN is
// DiT's: SiLU on the condition, then a zero-initialized Linear, so every layer and the output
// start at zero (adaLN-Zero) and F = 0 at initialization.
#pragma once
#include <torch/torch.h>

#include "models/layers.h"

namespace blocklab {

struct DiTOptions : ImageTransformerOptions {
  int64_t patch_values() const { return channels * patch * patch; }
  int64_t null_label() const { return classes; }
};

/// Tokens [N, P, C p p], each patch's values in (c, i, j) order as the patch embedding's
/// convolution reads them, back to images [N, C, H, W].
torch::Tensor unpatchify(const torch::Tensor& tokens, int64_t channels, int64_t height, int64_t width, int64_t patch);

/// The modules every block shares: patch and position embeddings, the condition, the output layer.
struct DiTSharedImpl : torch::nn::Module {
  explicit DiTSharedImpl(const DiTOptions& o);
  torch::nn::Conv2d patch_embed{nullptr};
  torch::Tensor pos_embed;  // [1, P, d]
  NoiseEmbedder noise_embed{nullptr};
  torch::nn::Embedding label_embed{nullptr};  // classes + 1 rows: the last is "no label"
  AdaLN out_ada{nullptr};
  torch::nn::Linear head{nullptr};  // d -> patch values, zero-initialized
  // The training pixels' mean and spread (in [0, 1]): how model space maps back to pixels. Kept
  // with the weights so that sampling needs no data set.
  torch::Tensor pixel_mean, pixel_std;
};
TORCH_MODULE(DiTShared);

struct DiTImpl : torch::nn::Module {
  explicit DiTImpl(const DiTOptions& o);

  /// The condition c [N, cond_dim] of noise input c_noise [N] and labels [N] (null_label() for
  /// none), by the input modules of block `first_block`.
  torch::Tensor condition(const torch::Tensor& c_noise, const torch::Tensor& labels, int64_t first_block);
  /// F of blocks [first, last) on the preconditioned input x [N, C, H, W]; same shape out.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond, int64_t first_block, int64_t last_block);

  Block block(int64_t b) { return fetch_block(blocks, b, stream); }
  /// Block b as initialized (layers, and its own input/output modules when independent).
  Block make_block(int64_t b) const;
  /// From now on the model holds one block at a time (see ViTImpl::stream_blocks).
  void stream_blocks(BlockFiller fill);
  /// The input/output modules block b uses: the shared ones, or its own copy (independent blocks).
  DiTShared io(int64_t b);
  /// Input/output modules this model holds (any block's copy when they are independent).
  DiTShared any_io() const;

  DiTOptions opt;
  DiTShared shared{nullptr};  // null when the blocks own their input/output modules
  std::function<Block(int64_t)> stream;  // set by stream_blocks
  torch::nn::ModuleDict blocks{nullptr};  // keyed "0", "1", ...: parameters blocks.{b}.*
};
TORCH_MODULE(DiT);

}  // namespace blocklab
