#include "families/lm/ar.h"

#include <cmath>
#include <random>

#include <fmt/format.h>

#include "data/text_data.h"
#include "models/cross_entropy.h"
#include "models/unit_rows.h"
#include "schedule/chain.h"
#include "schedule/precond.h"

namespace blocklab {

AutoregressiveLM::AutoregressiveLM(const Config& cfg, const DataShape& shape, const torch::Device& device,
                                   const std::vector<int64_t>& held)
    : LanguageModel(cfg,
                    lm_options(cfg, shape, held, shape.vocab, cfg.blocks_mode() ? 2 * shape.seq_len : shape.seq_len),
                    std::make_shared<LogNormalSigma>(cfg.diffusion.noise), device) {}

torch::Tensor AutoregressiveLM::targets(const torch::Tensor& bytes) {
  return unit_rows(lm_->shared->tokens->forward(bytes));
}

torch::Tensor AutoregressiveLM::embeddings() {
  return unit_rows(lm_->shared->tokens->weight.narrow(0, 0, lm_->opt.vocab));
}

torch::Tensor AutoregressiveLM::next_byte_logits(const torch::Tensor& tokens) {
  auto cond = lm_->clean_condition();
  const int64_t t = tokens.size(1);
  auto h = lm_->run(lm_->embed(tokens), cond, causal_mask(t, lm_->float_options()), lm_->positions(0, t), 0, lm_->opt.blocks);
  return lm_->logits(lm_->features(h, cond));
}

torch::Tensor AutoregressiveLM::readout(const torch::Tensor& h, const torch::Tensor& z, const torch::Tensor& sigma,
                                        const torch::Tensor& noise_cond) {
  const auto pc = precondition(sigma, cfg_.diffusion.noise.sigma_data);
  auto per_window = [](const torch::Tensor& c) { return c.view({-1, 1, 1}); };
  auto d = per_window(pc.c_skip) * z + per_window(pc.c_out) * lm_->features(h, noise_cond);
  return lm_->logits(d);
}

torch::Tensor AutoregressiveLM::denoise_logits(const torch::Tensor& context, const torch::Tensor& z,
                                               const torch::Tensor& sigma, int block) {
  const int64_t n = context.size(0), t = context.size(1);
  const auto pc = precondition(sigma, cfg_.diffusion.noise.sigma_data);
  auto noise_cond = lm_->noise_condition(pc.c_noise);  // [N, c]
  auto clean = lm_->embed(context);
  auto noisy = pc.c_in.view({-1, 1, 1}) * z;
  auto cond = torch::cat({lm_->clean_condition().unsqueeze(1).expand({n, t, -1}), noise_cond.unsqueeze(1).expand({n, t, -1})}, 1);
  auto positions = lm_->positions(0, t);  // noisy i sits at clean i's position: the context it extends
  auto h = lm_->run(torch::cat({clean, noisy}, 1), cond, clean_noisy_mask(t, z.options()), torch::cat({positions, positions}),
                    block, block + 1);
  return readout(h.narrow(1, t, t), z, sigma, noise_cond);
}

torch::Tensor AutoregressiveLM::next_byte_denoise(BlockCaches& caches, const torch::Tensor& z, double sigma, int block,
                                                  int64_t at) {
  auto s = torch::full({z.size(0)}, sigma, z.options());
  const auto pc = precondition(s, cfg_.diffusion.noise.sigma_data);
  auto noise_cond = lm_->noise_condition(pc.c_noise);
  auto h = lm_->run(pc.c_in.view({-1, 1, 1}) * z, noise_cond, {}, lm_->positions(at, 1), block, block + 1, &caches,
                    /*keep=*/false);
  return readout(h, z, s, noise_cond);
}

torch::Tensor AutoregressiveLM::sample_sigmas(int block, int64_t n, uint64_t seed, const torch::Device& device) const {
  return draw_levels(partition_, whole_, block, n, seed, cfg_.diffusion.sigma_sampling, device);
}

Loss AutoregressiveLM::loss(const Batch& batch, int block, uint64_t seed) {
  const int64_t t = batch.x.size(1) - 1;
  auto context = batch.x.narrow(1, 0, t), next = batch.x.narrow(1, 1, t);
  auto ce_of = [](const torch::Tensor& logits, const torch::Tensor& y) {
    return cross_entropy(logits, y).mean(1);
  };
  if (block < 0) {
    auto ce = ce_of(next_byte_logits(context), next).mean();
    return {ce, ce.detach()};
  }
  auto sigma = sample_sigmas(block, batch.x.size(0), seed, batch.x.device());
  auto y = targets(next);
  auto z = y + sigma.view({-1, 1, 1}) * torch::randn_like(y);
  auto ce = ce_of(denoise_logits(context, z, sigma, block), next);  // [N]
  auto w = precondition(sigma, cfg_.diffusion.noise.sigma_data).weight;
  return weighted_loss(ce, w, cfg_.diffusion.weighting);
}

torch::Tensor AutoregressiveLM::bits(const torch::Tensor& x) {
  const int64_t t = x.size(1) - 1;
  auto context = x.narrow(1, 0, t), next = x.narrow(1, 1, t);
  auto bits_of = [&](const torch::Tensor& logits) {
    auto ce = cross_entropy(logits, next);
    return ce.mean(1) / std::log(2.0);
  };
  if (!cfg_.blocks_mode()) return bits_of(next_byte_logits(context)).unsqueeze(0);
  auto z = chain_start({x.size(0), t, lm_->opt.hidden}, cfg_.diffusion.noise.sigma_max,
                       torch::TensorOptions().device(x.device()));
  auto logits_of = [&](const torch::Tensor& zi, double sigma, int block) {
    return denoise_logits(context, zi, torch::full({x.size(0)}, sigma, zi.options()), block);
  };
  const auto chain = run_chain(partition_, cfg_.inference_steps(), z, logits_of, embeddings(), cfg_.ar.step_temperature);
  return torch::stack({bits_of(chain.logits.back()), bits_of(chain.logits.front())});
}

std::vector<std::string> AutoregressiveLM::alternative_names() const {
  if (!cfg_.blocks_mode()) return {};
  return {"the first step's distribution (block 0 at sigma_max: the context alone)"};
}

std::string AutoregressiveLM::bits_meaning() const {
  if (!cfg_.blocks_mode()) return "next-byte cross-entropy in bits";
  return fmt::format("cross-entropy in bits of the distribution each byte is sampled from ({} denoising steps, one chain)",
                     cfg_.inference_steps());
}

std::vector<std::string> AutoregressiveLM::generate(const std::vector<std::string>& prompts, int64_t n,
                                                    const GenerateOptions& opt, const TextSink& sink) {
  torch::NoGradGuard no_grad;
  lm_->eval();
  torch::manual_seed(opt.seed);
  const int64_t room = lm_->opt.seq_len - 1;  // context positions training saw
  const int64_t blocks = lm_->opt.blocks, per_block = lm_->opt.layers / blocks;
  std::vector<std::string> text = prompts;
  for (auto& p : text)
    if (p.empty()) p = "\n";  // documents follow a blank line
  auto context = prompt_tokens(text, room, lm_->device());
  const int64_t rows = context.size(0);
  BlockCaches caches;
  torch::Tensor next_logits;  // end-to-end: the next byte's logits after the context
  int64_t layers = 0;
  // Feeds context tokens [N, k] at positions from `offset` through every block's layers (and
  // caches); end-to-end, the last one's logits predict the next byte.
  auto feed = [&](const torch::Tensor& tokens, int64_t offset) {
    auto cond = lm_->clean_condition();
    auto mask = tokens.size(1) > 1 ? causal_mask(tokens.size(1), lm_->float_options()) : torch::Tensor();
    auto h = lm_->embed(tokens);
    auto positions = lm_->positions(offset, tokens.size(1));
    if (!cfg_.blocks_mode()) {
      h = lm_->run(h, cond, mask, positions, 0, blocks, &caches);
      next_logits = lm_->logits(lm_->features(h.narrow(1, h.size(1) - 1, 1), cond)).squeeze(1);
    } else {
      for (int64_t b = 0; b < blocks; ++b) lm_->run(h, cond, mask, positions, b, b + 1, &caches);
    }
  };
  caches.clear();
  feed(context, 0);
  std::vector<std::string> out(prompts.size());
  const auto byte_embeddings = cfg_.blocks_mode() ? embeddings() : torch::Tensor();  // what the chain steps towards
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor logits;
    if (!cfg_.blocks_mode()) {
      logits = next_logits;
    } else {
      const int64_t at = context.size(1) - 1;  // the noisy token shares the last context byte's position
      auto logits_of = [&](const torch::Tensor& z, double sigma, int block) {
        layers += per_block;
        return next_byte_denoise(caches, z, sigma, block, at);
      };
      auto z = chain_start({rows, 1, lm_->opt.hidden}, cfg_.diffusion.noise.sigma_max, lm_->float_options());
      logits = run_chain(partition_, cfg_.inference_steps(), z, logits_of, byte_embeddings, cfg_.ar.step_temperature)
                   .logits.back()
                   .squeeze(1);
    }
    auto byte = sample_bytes(logits, opt.temperature).view({rows, 1});
    const auto bytes = byte.cpu();
    for (int64_t r = 0; r < rows; ++r) out[size_t(r)] += static_cast<char>(bytes[r][0].item<int64_t>());
    if (sink) sink(std::string(1, out[0].back()));
    if (i + 1 == n) break;
    context = torch::cat({context, byte}, 1);
    layers += lm_->opt.layers;
    if (context.size(1) > room) {  // out of positions: start again from the last half
      context = context.narrow(1, context.size(1) - room / 2, room / 2);
      caches.clear();
      feed(context, 0);
    } else {
      feed(byte, context.size(1) - 1);
    }
  }
  layers_per_byte_ = double(layers) / double(std::max<int64_t>(n, 1));
  return out;
}

}  // namespace blocklab
