#include "tasks/classification.h"

#include "schedule/precond.h"

namespace blocklab {

namespace F = torch::nn::functional;

ViTOptions vit_options(const Config& cfg, int64_t classes) {
  ViTOptions o;
  o.patch = cfg.model.patch;
  o.hidden = cfg.model.hidden;
  o.heads = cfg.model.heads;
  o.layers = cfg.model.layers;
  o.blocks = cfg.model.blocks;
  o.mlp_ratio = cfg.model.mlp_ratio;
  o.cond_dim = cfg.model.cond_dim;
  o.classes = classes;
  o.label_beside_cls = cfg.model.label_token == "beside_cls";
  return o;
}

DenoisingClassifier::DenoisingClassifier(ViT model, const Config& cfg)
    : model_(std::move(model)),
      schedule_(cfg.diffusion.noise),
      diffusion_(cfg.diffusion),
      blocks_(cfg.model.blocks),
      label_smoothing_(cfg.train.label_smoothing) {}

torch::Tensor DenoisingClassifier::target(const torch::Tensor& labels) {
  return F::normalize(model_->shared->label_embed->forward(labels), F::NormalizeFuncOptions().dim(-1));
}

torch::Tensor DenoisingClassifier::cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  return F::cross_entropy(logits, labels,
                          F::CrossEntropyFuncOptions().reduction(torch::kNone).label_smoothing(label_smoothing_));
}

torch::Tensor DenoisingClassifier::denoise_logits(const torch::Tensor& images, const torch::Tensor& z,
                                                  const torch::Tensor& sigma, int block) {
  const auto pc = precondition(sigma, diffusion_.noise.sigma_data);
  auto cond = model_->condition(pc.c_noise);
  auto h = model_->features(images, model_->label_lead(pc.c_in.unsqueeze(1) * z), cond, block, block + 1);
  auto denoised = pc.c_out.unsqueeze(1) * h + pc.c_skip.unsqueeze(1) * z;
  return model_->classify(denoised, cond);
}

Loss DenoisingClassifier::e2e_loss(const Batch& b) {
  auto ce = cross_entropy(model_->forward(b.images), b.labels).mean();
  return {ce, ce.detach()};
}

Loss DenoisingClassifier::block_loss(const Batch& b, int block, const torch::Tensor& sigma) {
  auto y = target(b.labels);
  auto z = y + sigma.unsqueeze(1) * torch::randn_like(y);
  auto ce = cross_entropy(denoise_logits(b.images, z, sigma, block), b.labels);  // [N]
  auto w = precondition(sigma, diffusion_.noise.sigma_data).weight;           // [N]
  // per_sample: the paper's E[w(sigma) CE]; batch_mean: the reference code's broadcast, mean(w) * mean(CE) (D1).
  auto loss = diffusion_.weighting == "per_sample" ? (w * ce).mean() : w.mean() * ce.mean();
  return {loss, ce.mean().detach()};
}

torch::Tensor class_weights(const torch::Tensor& logits, double temperature) {
  // temperature 1: softmax, so weights @ embeddings = E[y | z], the denoiser's estimate.
  // Lower sharpens toward the mode; 0 is the one-hot argmax.
  if (temperature <= 0) return F::one_hot(logits.argmax(-1), logits.size(-1)).to(logits.dtype());
  return torch::softmax(logits / temperature, -1);
}

StepLogits DenoisingClassifier::predict_steps(const torch::Tensor& images, int steps,
                                              std::optional<double> temperature) {
  StepLogits out;
  out.sigmas = schedule_.inference_sigmas(steps);
  const int64_t n = images.size(0);
  auto embeddings = F::normalize(model_->shared->label_embed->weight, F::NormalizeFuncOptions().dim(-1));  // (D2)
  auto z = torch::randn({n, model_->opt.hidden}, images.options()) * std::sqrt(1.0 + std::pow(out.sigmas[0], 2));
  for (size_t i = 0; i < out.sigmas.size(); ++i) {
    const double s = out.sigmas[i];
    const int block = schedule_.block_of(s, blocks_);
    auto logits = denoise_logits(images, z, torch::full({n}, s, images.options()), block);
    out.blocks.push_back(block);
    out.logits.push_back(logits);
    if (i + 1 < out.sigmas.size()) {
      auto expected = class_weights(logits, temperature.value_or(diffusion_.inference_temperature)).matmul(embeddings);
      z = euler_step(z, expected, s, out.sigmas[i + 1]);
    }
  }
  return out;
}

torch::Tensor DenoisingClassifier::teacher_forced_logits(const torch::Tensor& images, const torch::Tensor& labels,
                                                         int block, double sigma) {
  auto y = target(labels);
  auto z = y + sigma * torch::randn_like(y);
  return denoise_logits(images, z, torch::full({images.size(0)}, sigma, images.options()), block);
}

}  // namespace blocklab
