#include "families/lm/mdm.h"

#include <cmath>
#include <random>

#include <fmt/format.h>

#include "data/text_data.h"
#include "models/cross_entropy.h"

namespace blocklab {

namespace {
// The sinusoidal embedding resolves its input to about 1/1000 of the range, as DiT's timesteps.
torch::Tensor time_input(const torch::Tensor& t) { return 1000.0 * t; }
}  // namespace

MaskedDiffusionLM::MaskedDiffusionLM(const Config& cfg, const DataShape& shape, const torch::Device& device,
                                     const std::vector<int64_t>& held)
    : LanguageModel(cfg, lm_options(cfg, shape, held, shape.vocab + 1, shape.seq_len), std::make_shared<UniformTime>(),
                    device) {}

torch::Tensor MaskedDiffusionLM::logits(const torch::Tensor& tokens, const torch::Tensor& t, int block) {
  auto cond = lm_->noise_condition(time_input(t));
  auto h = lm_->run(lm_->embed(tokens), cond, {}, lm_->positions(0, tokens.size(1)), first_block(block), last_block(block));
  return lm_->logits(lm_->features(h, cond));
}

std::pair<torch::Tensor, torch::Tensor> MaskedDiffusionLM::elbo_term(const torch::Tensor& x, const torch::Tensor& t,
                                                                     int block) {
  auto masked = torch::rand(x.sizes(), t.options()) < t.unsqueeze(1);  // [N, T]: alpha(t) = 1 - t of bytes survive
  auto input = torch::where(masked, torch::full_like(x, mask_token()), x);
  auto ce = cross_entropy(logits(input, t, block), x);
  auto m = masked.to(ce.dtype());
  auto nats = (ce * m).sum(1) / t / double(x.size(1));  // -alpha'/(1 - alpha) = 1/t, summed, per byte
  auto plain = ((ce * m).sum() / m.sum().clamp_min(1.0)).detach();
  return {nats, plain};
}

torch::Tensor MaskedDiffusionLM::sample_times(int block, int64_t n, uint64_t seed, const torch::Device& device) const {
  std::mt19937_64 rng(seed);
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  const auto r = block < 0 ? LevelRange{0.0, 1.0} : partition_.range(block);
  std::vector<double> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double q = std::fmod(u + double(i) / double(n), 1.0);
    t[size_t(i)] = std::max(kMinTime, r.lo + (r.hi - r.lo) * q);
  }
  return torch::tensor(t, torch::kFloat64).to(device, torch::kFloat32);
}

Loss MaskedDiffusionLM::loss(const Batch& batch, int block, uint64_t seed) {
  auto [nats, plain] = elbo_term(batch.x, sample_times(block, batch.x.size(0), seed, batch.x.device()), block);
  return {nats.mean(), plain};
}

torch::Tensor MaskedDiffusionLM::bits(const torch::Tensor& x) {
  const int k = cfg_.mdm.eval_times;
  auto total = torch::zeros({x.size(0)}, torch::TensorOptions().device(x.device()));
  for (int i = 0; i < k; ++i) {
    const double t = (i + 0.5) / k;
    auto times = torch::full({x.size(0)}, t, total.options());
    total += elbo_term(x, times, block_of(t)).first;
  }
  return (total / double(k) / std::log(2.0)).unsqueeze(0);
}

std::string MaskedDiffusionLM::bits_meaning() const {
  return fmt::format("ELBO bits per byte (midpoint rule over {} masking times, each by its block)", cfg_.mdm.eval_times);
}

std::vector<std::string> MaskedDiffusionLM::generate(const std::vector<std::string>& prompts, int64_t n,
                                                     const GenerateOptions& opt, const TextSink& sink) {
  torch::NoGradGuard no_grad;
  lm_->eval();
  torch::manual_seed(opt.seed);
  const int64_t window = lm_->opt.seq_len, steps = cfg_.inference_steps();
  auto context = prompt_tokens(prompts, window / 2, lm_->device());  // [N, P]
  std::vector<std::string> out(prompts.size());
  int64_t layers = 0;
  for (int64_t done = 0; done < n;) {
    const int64_t fill = std::min(window - context.size(1), n - done);
    auto seq = torch::cat({context, torch::full({context.size(0), fill}, mask_token(), context.options())}, 1);
    // The schedule's t walks from 1 to 0 in `steps` equal steps; from t to s, each masked byte is
    // revealed with probability (alpha(s) - alpha(t)) / (1 - alpha(t)) = (t - s) / t. The model is
    // asked at the window's actual masked fraction, the level training saw (a prompt leaves far
    // fewer masks than t), and that level picks the block.
    for (int64_t k = 0; k < steps; ++k) {
      const double t = 1.0 - double(k) / double(steps), s = 1.0 - double(k + 1) / double(steps);
      auto masked = seq == mask_token();
      if (!masked.any().item<bool>()) break;
      auto level = masked.to(torch::kFloat32).mean(1).clamp_min(kMinTime);  // [N]
      const int block = block_of(level.mean().item<double>());
      auto proposal = sample_bytes(logits(seq, level, block), opt.temperature);
      auto reveal = masked & (torch::rand(seq.sizes(), level.options()) < (t - s) / t);
      seq = torch::where(reveal, proposal, seq);
      layers += last_block(block) - first_block(block);
    }
    auto fresh = seq.narrow(1, context.size(1), fill).cpu();
    for (size_t i = 0; i < out.size(); ++i) out[i] += tokens_to_bytes(fresh[int64_t(i)]);
    if (sink) sink(tokens_to_bytes(fresh[0]));
    done += fill;
    const int64_t keep = std::min(window / 2, seq.size(1));
    context = seq.narrow(1, seq.size(1) - keep, keep);
  }
  layers_per_byte_ = double(layers * (lm_->opt.layers / lm_->opt.blocks)) / double(std::max<int64_t>(n, 1));
  return out;
}

}  // namespace blocklab
