#include "models/dit.h"
#include "models/dense.h"
#include "models/modulation.h"
#include "models/tokens.h"

namespace blocklab {


torch::Tensor unpatchify(const torch::Tensor& tokens, int64_t channels, int64_t height, int64_t width, int64_t patch) {
  const int64_t n = tokens.size(0), p = patch;
  return tokens.view({n, height / p, width / p, channels, p, p})
      .permute({0, 3, 1, 4, 2, 5})  // [N, C, H/p, p, W/p, p]
      .reshape({n, channels, height, width});
}

DiTSharedImpl::DiTSharedImpl(const DiTOptions& o) {
  patch_embed = register_module(
      "patch_embed", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.channels, o.hidden, o.patch).stride(o.patch)));
  pos_embed = register_parameter("pos_embed", torch::randn({1, o.num_patches(), o.hidden}) * 0.02);
  noise_embed = register_module("noise_embed", NoiseEmbedder(o.cond_dim));
  label_embed = register_module("label_embed", torch::nn::Embedding(o.classes + 1, o.cond_dim));
  out_ada = register_module("out_ada", AdaLN(o.cond_dim, o.hidden, 2, AdaLNStyle::SiluBefore));
  head = register_module("head", torch::nn::Linear(o.hidden, o.patch_values()));
  pixel_mean = register_buffer("pixel_mean", torch::zeros({}));
  pixel_std = register_buffer("pixel_std", torch::ones({}));
  torch::NoGradGuard no_grad;
  label_embed->weight.normal_(0.0, 0.02);  // as DiT
  head->weight.zero_();                     // adaLN-Zero: F = 0 at initialization
  head->bias.zero_();
}

DiTImpl::DiTImpl(const DiTOptions& o) : opt(o) {
  TORCH_CHECK(o.blocks >= 1 && o.layers % o.blocks == 0, "model.blocks must divide model.layers");
  if (!o.own_io) shared = register_module("shared", DiTShared(o));
  blocks = register_module("blocks", torch::nn::ModuleDict());
  for (int64_t b = 0; b < o.blocks; ++b)
    if (o.holds(b)) blocks->update({{std::to_string(b), make_block(b).ptr()}});
}

Block DiTImpl::make_block(int64_t b) const {
  opt.seed_block(b);
  Block block(opt.layer(AdaLNStyle::SiluBefore), opt.layers / opt.blocks);
  if (opt.own_io) block->io = block->register_module("io", DiTShared(opt).ptr());
  return block;
}

void DiTImpl::stream_blocks(BlockFiller fill) {
  stream = [this, fill](int64_t b) {
    auto block = make_block(b);
    fill(block, b);
    return block;
  };
}

DiTShared DiTImpl::io(int64_t b) {
  if (!opt.own_io) return shared;
  TORCH_CHECK(b >= 0, "independent blocks have no end-to-end input/output modules");
  return DiTShared(std::dynamic_pointer_cast<DiTSharedImpl>(block(b)->io));
}

DiTShared DiTImpl::any_io() const {
  if (!opt.own_io) return shared;
  return DiTShared(std::dynamic_pointer_cast<DiTSharedImpl>(held_block(blocks, std::stoll(blocks->keys().front()))->io));
}

torch::Tensor DiTImpl::condition(const torch::Tensor& c_noise, const torch::Tensor& labels, int64_t first_block) {
  auto in = io(first_block);
  return in->noise_embed->embed(c_noise) + in->label_embed->forward(labels);
}

torch::Tensor DiTImpl::forward(const torch::Tensor& x, const torch::Tensor& cond, int64_t first_block,
                               int64_t last_block) {
  TORCH_CHECK(!opt.own_io || last_block == first_block + 1, "independent blocks run one at a time");
  auto in = io(first_block);
  auto h = token_sequence({}, embed_patches(x, in->patch_embed), in->pos_embed);  // [N, P, d]
  for (int64_t b = first_block; b < last_block; ++b) h = block(b)->forward(h, cond);
  auto m = in->out_ada->forward(cond);  // shift, scale: [N, 1, d]
  h = modulate(h, m[0], m[1]);
  return unpatchify(dense(h, in->head), opt.channels, opt.height, opt.width, opt.patch);
}

}  // namespace blocklab
