#include "models/lm.h"
#include "models/modulation.h"
#include "models/dense.h"

#include <limits>

namespace blocklab {


LMSharedImpl::LMSharedImpl(const LMOptions& o) {
  tokens = register_module("tokens", torch::nn::Embedding(o.input_vocab, o.hidden));
  noise_embed = register_module("noise_embed", NoiseEmbedder(o.cond_dim));
  clean_cond = register_parameter("clean_cond", torch::zeros({o.cond_dim}));
  out_ada = register_module("out_ada", AdaLN(o.cond_dim, o.hidden, 2, AdaLNStyle::SiluBefore));
  head = register_module("head", torch::nn::Linear(o.hidden, o.vocab));
  torch::NoGradGuard no_grad;
  tokens->weight.normal_(0.0, 0.02);  // as GPT-2
  head->weight.zero_();
  head->bias.zero_();
}

torch::Tensor causal_mask(int64_t t, const torch::TensorOptions& options) {
  const double inf = std::numeric_limits<double>::infinity();
  return torch::full({t, t}, -inf, options).triu(1);
}

torch::Tensor clean_noisy_mask(int64_t t, const torch::TensorOptions& options) {
  const double inf = std::numeric_limits<double>::infinity();
  auto causal = causal_mask(t, options);                  // clean -> clean; also noisy i -> clean j <= i
  auto self = torch::full({t, t}, -inf, options).fill_diagonal_(0.0);  // noisy i -> noisy i only
  auto hidden = torch::full({t, t}, -inf, options);       // clean rows never see noisy tokens
  return torch::cat({torch::cat({causal, hidden}, 1), torch::cat({causal, self}, 1)}, 0);
}

LMImpl::LMImpl(const LMOptions& o) : opt(o) {
  TORCH_CHECK(o.blocks >= 1 && o.layers % o.blocks == 0, "model.blocks must divide model.layers");
  TORCH_CHECK(!o.own_io, "the language models have no independent blocks");
  shared = register_module("shared", LMShared(o));
  blocks = register_module("blocks", torch::nn::ModuleDict());
  for (int64_t b = 0; b < o.blocks; ++b)
    if (o.holds(b)) blocks->update({{std::to_string(b), make_block(b).ptr()}});
}

Block LMImpl::make_block(int64_t b) const {
  opt.seed_block(b);
  return Block(opt.layer(AdaLNStyle::SiluBefore), opt.layers / opt.blocks);
}

void LMImpl::stream_blocks(BlockFiller fill) {
  stream = [this, fill](int64_t b) {
    auto block = make_block(b);
    fill(block, b);
    return block;
  };
}

torch::Tensor LMImpl::embed(const torch::Tensor& tokens) { return shared->tokens->forward(tokens); }

torch::Tensor LMImpl::positions(int64_t first, int64_t t) const {
  return torch::arange(first, first + t, torch::TensorOptions().dtype(torch::kInt64).device(device()));
}

torch::Tensor LMImpl::noise_condition(const torch::Tensor& c_noise) { return shared->noise_embed->embed(c_noise); }

torch::Tensor LMImpl::clean_condition() { return shared->clean_cond.unsqueeze(0); }

torch::Tensor LMImpl::run(torch::Tensor h, const torch::Tensor& cond, const torch::Tensor& mask,
                          const torch::Tensor& positions, int64_t first, int64_t last, BlockCaches* caches, bool keep) {
  if (caches) caches->resize(size_t(opt.blocks));
  for (int64_t b = first; b < last; ++b)
    h = block(b)->forward(h, cond, mask, caches ? &(*caches)[size_t(b)] : nullptr, keep, positions);
  return h;
}

torch::Tensor LMImpl::features(const torch::Tensor& h, const torch::Tensor& cond) {
  auto m = shared->out_ada->forward(cond);  // shift, scale
  return modulate(h, m[0], m[1]);
}

torch::Tensor LMImpl::logits(const torch::Tensor& features) { return dense(features, shared->head); }

}  // namespace blocklab
