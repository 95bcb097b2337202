#include "families/classifier/classifier.h"

#include <cmath>

#include <fmt/format.h>

#include "models/cross_entropy.h"
#include "models/unit_rows.h"
#include "schedule/precond.h"
#include "util/error.h"

namespace blocklab {

ViTOptions vit_options(const Config& cfg, const DataShape& shape, const std::vector<int64_t>& held) {
  ViTOptions o;
  o.label_beside_cls = cfg.classifier.label_token == LabelToken::BesideCls;
  // The lead tokens (the noisy label, and the class token beside it) count for memory too.
  static_cast<ImageTransformerOptions&>(o) =
      image_transformer_options(cfg, shape, cfg.classifier.patch, "classifier.patch", o.lead_tokens());
  o.held = held;
  return o;
}

DenoisingClassifier::DenoisingClassifier(const Config& cfg, const DataShape& shape, const torch::Device& device,
                                         const std::vector<int64_t>& held)
    : DenoisingClassifier(cfg, ViT(vit_options(cfg, shape, held))) {
  vit_->to(device);
}

DenoisingClassifier::DenoisingClassifier(const Config& cfg, ViT vit)
    : cfg_(cfg),
      vit_(std::move(vit)),
      partition_(std::make_shared<LogNormalSigma>(cfg.diffusion.noise), cfg.model.blocks, cfg.diffusion.overlap) {}

torch::Tensor DenoisingClassifier::target(const torch::Tensor& labels) {
  if (vit_->opt.own_io) return vit_->fixed_targets.index_select(0, labels);
  return unit_rows(vit_->shared->label_embed->forward(labels));
}

torch::Tensor DenoisingClassifier::embeddings() {
  // The normalized table: the chain moves z towards the targets training used. (The reference
  // code passes the unnormalized table here; docs/method.md.)
  if (vit_->opt.own_io) return vit_->fixed_targets;
  return unit_rows(vit_->shared->label_embed->weight);
}

torch::Tensor DenoisingClassifier::cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  return blocklab::cross_entropy(logits, labels, cfg_.classifier.label_smoothing);
}

DenoisingClassifier::Encoded DenoisingClassifier::encode(const torch::Tensor& images, const torch::Tensor& z,
                                                         const torch::Tensor& sigma, int block) {
  auto pc = precondition(sigma, cfg_.diffusion.noise.sigma_data);
  auto cond = vit_->condition(pc.c_noise, block);
  auto tokens = vit_->encode(images, vit_->label_lead(pc.c_in.unsqueeze(1) * z, block), cond, block, block + 1);
  return {tokens, cond, pc};
}

torch::Tensor DenoisingClassifier::denoise(const torch::Tensor& images, const torch::Tensor& z, const torch::Tensor& sigma,
                                           int block) {
  const auto e = encode(images, z, sigma, block);
  return e.pc.c_out.unsqueeze(1) * vit_->features(e.tokens, block) + e.pc.c_skip.unsqueeze(1) * z;
}

torch::Tensor DenoisingClassifier::denoise_logits(const torch::Tensor& images, const torch::Tensor& z,
                                                  const torch::Tensor& sigma, int block) {
  const auto e = encode(images, z, sigma, block);
  return vit_->logits(e.tokens, e.cond, block, {e.pc.c_out, e.pc.c_skip, z});
}

Loss DenoisingClassifier::e2e_loss(const Batch& b) {
  auto ce = cross_entropy(vit_->forward(b.x), b.y).mean();
  return {ce, ce.detach()};
}

Loss DenoisingClassifier::block_loss(const Batch& b, int block, const torch::Tensor& sigma) {
  auto y = target(b.y);
  auto z = y + sigma.unsqueeze(1) * torch::randn_like(y);
  auto ce = cross_entropy(denoise_logits(b.x, z, sigma, block), b.y);  // [N]
  auto w = precondition(sigma, cfg_.diffusion.noise.sigma_data).weight;  // lambda(sigma) [N]
  return weighted_loss(ce, w, cfg_.diffusion.weighting);
}

torch::Tensor DenoisingClassifier::sample_sigmas(int block, int64_t n, uint64_t seed, const torch::Device& device) const {
  return draw_levels(partition_, partition_, block, n, seed, cfg_.diffusion.sigma_sampling, device);
}

Loss DenoisingClassifier::loss(const Batch& batch, int block, uint64_t seed) {
  if (block < 0) return e2e_loss(batch);
  return block_loss(batch, block, sample_sigmas(block, batch.y.size(0), seed, batch.x.device()));
}

torch::Tensor DenoisingClassifier::start_noise(int64_t n, const torch::TensorOptions& options) {
  return chain_start({n, vit_->opt.hidden}, cfg_.diffusion.noise.sigma_max, options);
}

ChainResult DenoisingClassifier::predict_steps(const torch::Tensor& images, int steps, std::optional<double> temperature) {
  const int64_t n = images.size(0);
  auto z = start_noise(n, images.options());
  auto logits_of = [&](const torch::Tensor& zi, double s, int block) {
    return denoise_logits(images, zi, torch::full({n}, s, images.options()), block);
  };
  return run_chain(partition_, steps, z, logits_of, embeddings(),
                   temperature.value_or(cfg_.classifier.inference_temperature));
}

torch::Tensor DenoisingClassifier::teacher_forced_logits(const torch::Tensor& images, const torch::Tensor& labels,
                                                         int block, double sigma) {
  auto y = target(labels);
  auto z = y + sigma * torch::randn_like(y);
  return denoise_logits(images, z, torch::full({images.size(0)}, sigma, images.options()), block);
}

double DenoisingClassifier::probe_sigma(int block) const {
  for (double s : partition_.inference_levels(cfg_.inference_steps()))
    if (partition_.block_of(s) == block) return s;
  const auto r = partition_.nominal(block);
  return std::sqrt(r.lo * r.hi);
}

}  // namespace blocklab
