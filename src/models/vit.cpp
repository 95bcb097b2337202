#include "models/vit.h"

#include "models/dense.h"
#include "models/tokens.h"

#include <algorithm>

namespace blocklab {

SharedIOImpl::SharedIOImpl(const ViTOptions& o) {
  patch_embed = register_module(
      "patch_embed", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.channels, o.hidden, o.patch).stride(o.patch)));
  pos_embed = register_parameter("pos_embed", torch::randn({1, o.lead_tokens() + o.num_patches(), o.hidden}) * 0.02);
  cls_token = register_parameter("cls_token", torch::randn({1, 1, o.hidden}) * 0.02);
  if (!o.own_io) label_embed = register_module("label_embed", torch::nn::Embedding(o.classes, o.hidden));
  noise_embed = register_module("noise_embed", NoiseEmbedder(o.cond_dim));
  final_norm = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden}).eps(1e-6)));
  out_ada = register_module("out_ada", AdaLN(o.cond_dim, o.hidden, 2));
  head = register_module("head", torch::nn::Linear(o.hidden, o.classes));
  torch::NoGradGuard no_grad;
  if (label_embed) label_embed->weight.normal_(0.0, 0.02);  // N(0, 0.02), L2-normalized when used (docs/method.md)
  head->weight.zero_();                     // zero-initialized classifier (adaLN-Zero)
  head->bias.zero_();
}

ViTImpl::ViTImpl(const ViTOptions& o) : opt(o) {
  TORCH_CHECK(o.blocks >= 1 && o.layers % o.blocks == 0, "model.blocks must divide model.layers");
  if (!o.own_io) shared = register_module("shared", SharedIO(o));
  else
    fixed_targets = register_buffer(
        "fixed_targets", torch::nn::functional::normalize(torch::randn({o.classes, o.hidden}),
                                                          torch::nn::functional::NormalizeFuncOptions().dim(-1)));
  blocks = register_module("blocks", torch::nn::ModuleDict());
  for (int64_t b = 0; b < o.blocks; ++b)
    if (o.holds(b)) blocks->update({{std::to_string(b), make_block(b).ptr()}});
}

Block ViTImpl::make_block(int64_t b) const {
  opt.seed_block(b);
  Block block(opt.layer(AdaLNStyle::SiluAfter), opt.layers / opt.blocks);
  if (opt.own_io) block->io = block->register_module("io", SharedIO(opt).ptr());
  return block;
}

void ViTImpl::stream_blocks(BlockFiller fill) {
  stream = [this, fill](int64_t b) {
    auto block = make_block(b);
    fill(block, b);
    return block;
  };
}

Block ViTImpl::block(int64_t b) { return fetch_block(blocks, b, stream); }

SharedIO ViTImpl::io(int64_t b) {
  if (!opt.own_io) return shared;
  TORCH_CHECK(b >= 0, "independent blocks have no end-to-end input/output modules");
  return SharedIO(std::dynamic_pointer_cast<SharedIOImpl>(block(b)->io));
}

torch::Tensor ViTImpl::condition(const torch::Tensor& c_noise, int64_t b) { return io(b)->noise_embed->forward(c_noise); }

torch::Tensor ViTImpl::encode(const torch::Tensor& images, const std::vector<torch::Tensor>& lead,
                              const torch::Tensor& cond, int64_t first_block, int64_t last_block) {
  TORCH_CHECK(!opt.own_io || last_block == first_block + 1, "independent blocks run one at a time");
  auto in = io(first_block);
  // Lead tokens take the first positions, patches always the last P, in both modes.
  auto pos = in->pos_embed;
  if (int64_t(lead.size()) < opt.lead_tokens())
    pos = torch::cat({pos.narrow(1, 0, int64_t(lead.size())), pos.narrow(1, opt.lead_tokens(), opt.num_patches())}, 1);
  auto x = token_sequence(lead, embed_patches(images, in->patch_embed), pos);  // (N, lead+P, d)
  for (int64_t b = first_block; b < last_block; ++b) x = block(b)->forward(x, cond);
  return x;
}

torch::Tensor ViTImpl::features(const torch::Tensor& tokens, int64_t b) {
  return first_token_norm(tokens, io(b)->final_norm);
}

std::vector<torch::Tensor> ViTImpl::label_lead(const torch::Tensor& scaled_label, int64_t b) {
  if (!opt.label_beside_cls) return {scaled_label};
  return {io(b)->cls_token.squeeze(1).expand({scaled_label.size(0), opt.hidden}), scaled_label};
}

torch::Tensor ViTImpl::logits(const torch::Tensor& tokens, const torch::Tensor& cond, int64_t b, const ReadoutSkip& skip) {
  auto out = io(b);
  return dense(readout(tokens, out->final_norm, out->out_ada->product(cond), skip), out->head);
}

torch::Tensor ViTImpl::forward(const torch::Tensor& images) {
  const int64_t n = images.size(0);
  auto cond = condition(torch::zeros({n}, images.options()), -1);
  auto lead = io(-1)->cls_token.squeeze(1).expand({n, opt.hidden});
  return logits(encode(images, {lead}, cond, 0, opt.blocks), cond, -1);
}

}  // namespace blocklab
