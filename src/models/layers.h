// Building blocks of the noise-conditioned transformer: the sinusoidal noise-level embedding
// and the adaLN-Zero transformer layer (DiT, Peebles & Xie 2023; docs/method.md).
#pragma once
#include <torch/torch.h>

#include <functional>

namespace blocklab {

/// Sinusoidal features of a scalar per sample: [cos(t f_k), sin(t f_k)], f_k = max_period^(-k/half).
torch::Tensor sinusoidal_embedding(const torch::Tensor& t, int64_t dim, double max_period = 10000.0);

/// t (here c_noise = ln(sigma)/4) -> SiLU(MLP(sinusoid(t))): the conditioning vector of every layer.
struct NoiseEmbedderImpl : torch::nn::Module {
  static constexpr int64_t kFrequencyDim = 256;  // as DiT and the reference code
  explicit NoiseEmbedderImpl(int64_t cond_dim);
  torch::Tensor forward(const torch::Tensor& c_noise);  // SiLU(embed(c_noise)): [N] -> [N, cond_dim]
  torch::Tensor embed(const torch::Tensor& c_noise);    // the MLP's output, before the SiLU (DiT adds the label here)
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(NoiseEmbedder);

/// Where adaLN's SiLU sits: after the Linear, as the DiffusionBlocks authors' released ViT code
/// (docs/method.md), or before it, as DiT (Peebles & Xie 2023) and every DiT since.
enum class AdaLNStyle { SiluAfter, SiluBefore };

/// Zero-initialized modulation of the condition, split into `chunks` vectors of width d:
/// SiLU(Linear(cond)) or Linear(SiLU(cond)) (AdaLNStyle). Zero either way at initialization.
/// cond is one vector per sequence [N, c] or one per token [N, T, c] (the language models).
struct AdaLNImpl : torch::nn::Module {
  AdaLNImpl(int64_t cond_dim, int64_t hidden, int64_t chunks, AdaLNStyle style = AdaLNStyle::SiluAfter);
  std::vector<torch::Tensor> forward(const torch::Tensor& cond);  // each [N, 1, d] (or [N, T, d])
  torch::Tensor product(const torch::Tensor& cond);                // the chunks side by side: [N, chunks d] (or [N, T, ..])
  torch::nn::Linear proj{nullptr};
  int64_t chunks;
  AdaLNStyle style;
};
TORCH_MODULE(AdaLN);

struct TransformerLayerOptions {
  int64_t hidden, heads, mlp_ratio, cond_dim;
  AdaLNStyle ada_style = AdaLNStyle::SiluAfter;
};

/// The keys and values of the tokens a layer has already seen, so that generation feeds only the
/// new ones (autoregressive decoding).
struct KVCache {
  torch::Tensor k, v;  // [N, heads, T_seen, d / heads]; undefined before the first token
  int64_t length() const { return k.defined() ? k.size(2) : 0; }
};

/// How a layer's attention sees the tokens: `mask` is added to the scores ([T_q, T_k] of 0 and
/// -inf; undefined: every token sees every token); `positions` (int64 [T], undefined: none)
/// rotate queries and keys by their token's position (RoPE, Su et al. 2021), so that attention
/// sees relative offsets; with a `cache`, the new tokens also see the cached ones, and are
/// appended to it unless `keep` is false (a query that must leave no trace).
struct AttentionContext {
  torch::Tensor mask;
  KVCache* cache = nullptr;
  bool keep = true;
  torch::Tensor positions;
};

/// A stride-p p x p convolution without padding (a ViT's or DiT's patch embedding) as one matrix
/// product: the image [N, C, H, W] cut into its P = (H/p)(W/p) patches [N, P, C p p] (row-major
/// patch order, as the convolution's output flattened) times the kernel seen as [d, C p p], through
/// dense() (the GEMM; libtorch's convolution costs several times as much at these sizes). The
/// module keeps its parameters, names and shapes: checkpoints are unchanged. Returns [N, P, d].
torch::Tensor embed_patches(const torch::Tensor& images, const torch::nn::Conv2d& conv);
/// The p x p patches of images [N, C, H, W] as rows, [N, P, C p p] (embed_patches' operand).
torch::Tensor image_patches(const torch::Tensor& images, int64_t p);

/// Rotary position embedding of x [.., T, head_dim] at positions [T] (rotate-half form, base 10000).
torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& positions);

/// h = x + g1 * Attn(LN(x)(1+s1)+b1);  out = h + g2 * MLP(LN(h)(1+s2)+b2). Identity at init.
struct TransformerLayerImpl : torch::nn::Module {
  explicit TransformerLayerImpl(const TransformerLayerOptions& o);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond, const AttentionContext& ctx = {});  // x: [N, T, d]
  torch::Tensor attention(const torch::Tensor& x, const AttentionContext& ctx = {});

  TransformerLayerOptions opt;
  AdaLN ada{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(TransformerLayer);

/// What every model of blocks shares: the layer stack, its blocks, and which of them a model holds.
struct StackOptions {
  int64_t hidden = 64, heads = 4, layers = 6, blocks = 3, mlp_ratio = 4, cond_dim = 64;
  // Block b is initialized from its own seed, derived from this one (and the shared modules from
  // torch's generator as the caller left it), so a model that holds only some blocks starts them
  // exactly as the whole model would: one process per block trains the same network.
  uint64_t seed = 0;
  std::vector<int64_t> held;  // the blocks this model holds; empty: all of them
  // Independent blocks (train.shared = independent): each block owns a copy of the input and
  // output modules, `blocks.{b}.io.*`, and the model has no `shared.*` (docs/distributed.md).
  bool own_io = false;
  bool holds(int64_t b) const;
  /// Seeds torch's generator for block b's initialization.
  void seed_block(int64_t b) const;
  /// The layer of this stack with adaLN in `style`.
  TransformerLayerOptions layer(AdaLNStyle style) const { return {hidden, heads, mlp_ratio, cond_dim, style}; }
};

/// What the ViT and the DiT share: the images and their patches.
struct ImageTransformerOptions : StackOptions {
  int64_t height = 28, width = 28, channels = 1, patch = 7;
  int64_t classes = 10;
  int64_t num_patches() const { return (height / patch) * (width / patch); }
};

/// One block of DiffusionBlocks: `num_layers` consecutive transformer layers
/// (parameters `layers.{i}.*`, so a model's are `blocks.{b}.layers.{i}.*`).
struct BlockImpl : torch::nn::Module {
  BlockImpl(const TransformerLayerOptions& o, int64_t num_layers);
  /// With a cache, `caches` holds one per layer of this block.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& cond, const torch::Tensor& mask = {},
                        std::vector<KVCache>* caches = nullptr, bool keep = true, const torch::Tensor& positions = {});
  torch::nn::ModuleList layers{nullptr};
  std::shared_ptr<torch::nn::Module> io;  // independent blocks: the block's own input/output modules
};
TORCH_MODULE(Block);

/// Block b of a model's `blocks` dictionary (keyed "0", "1", ...); a logic error if it is not held.
Block held_block(const torch::nn::ModuleDict& blocks, int64_t b);

/// Fills a freshly built block b with its weights (a model streaming its blocks, see below).
using BlockFiller = std::function<void(Block& block, int64_t b)>;
/// Block b of `blocks`; when it is not held and `stream` is set, block b replaces the block held,
/// built by `stream`: a model that holds one block at a time (evaluation of per-block runs).
Block fetch_block(torch::nn::ModuleDict& blocks, int64_t b, const std::function<Block(int64_t)>& stream);

}  // namespace blocklab
