#include "families/lm/language_model.h"

#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "data/text_data.h"
#include "eval/text_quality.h"
#include "util/seed.h"

namespace blocklab {

LMOptions lm_options(const Config& cfg, const DataShape& shape, const std::vector<int64_t>& held, int64_t input_vocab,
                     int64_t tokens) {
  LMOptions o;
  static_cast<StackOptions&>(o) = stack_options(cfg);
  o.held = held;
  o.vocab = shape.vocab;
  o.input_vocab = input_vocab;
  o.seq_len = shape.seq_len;
  refuse_what_cannot_fit(cfg, tokens);
  return o;
}

LanguageModel::LanguageModel(const Config& cfg, LMOptions options, std::shared_ptr<const NoiseDistribution> levels,
                             const torch::Device& device)
    : cfg_(cfg),
      lm_(LM(options)),
      partition_(levels, cfg.model.blocks, cfg.diffusion.overlap),
      whole_(levels, 1, 0.0) {
  lm_->to(device);
}

Evaluation LanguageModel::evaluate(const Dataset& data, Split split, uint64_t seed) {
  torch::NoGradGuard no_grad;
  const bool was_training = lm_->is_training();
  lm_->eval();
  const int64_t n = data.size(split), batch = 64;
  torch::Tensor total;  // [1 + A]
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t lo = 0, i = 0; lo < n; lo += batch, ++i) {
    const auto b = data.batch(split, torch::arange(lo, std::min(n, lo + batch), torch::kInt64), lm_->device());
    torch::manual_seed(derive_seed(seed, Stream::Eval, uint64_t(i)));  // the same masks and noise for every model
    auto sums = bits(b.x).sum(1).to(torch::kCPU, torch::kFloat64);
    total = total.defined() ? total + sums : sums;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Evaluation e;
  e.files["samples.txt"] = continuations(data, split, derive_seed(seed, Stream::Eval, uint64_t(1) << 40));
  lm_->train(was_training);
  total = total / double(n);
  e.headline = {"val bits/byte", total[0].item<double>(), /*higher_is_better=*/false, /*percent=*/false};
  const auto names = alternative_names();
  for (size_t a = 0; a < names.size(); ++a) {
    e.alternatives.push_back({"val bits/byte, " + names[a], total[int64_t(a) + 1].item<double>(), false, false});
    e.details["val_bpb_alternatives"][names[a]] = e.alternatives.back().value;
  }
  e.lines.push_back(fmt::format("{} on {} windows of {} bytes", bits_meaning(), n, lm_->opt.seq_len));
  e.details["val_bpb"] = e.headline.value;
  e.details["val_bpb_meaning"] = bits_meaning();
  e.examples = n;
  e.ms_per_example = 1000.0 * seconds / double(n);
  return e;
}

std::string LanguageModel::continuations(const Dataset& data, Split split, uint64_t seed) {
  const int64_t T = data.shape().seq_len, prompt = std::min<int64_t>(32, T / 4), length = std::min<int64_t>(64, T - prompt);
  const int64_t windows = data.size(split), count = std::min<int64_t>(4, windows);
  if (prompt < 1 || count < 1) return "";
  const auto x = data.batch(split, torch::arange(count, torch::kInt64) * (windows / count), torch::kCPU).x;
  std::vector<std::string> prompts, references;
  for (int64_t i = 0; i < count; ++i) {
    const auto text = tokens_to_bytes(x[i]);
    prompts.push_back(text.substr(0, size_t(prompt)));
    references.push_back(text.substr(size_t(prompt), size_t(length)));
  }
  GenerateOptions opt;
  opt.seed = seed;
  return samples_text(prompts, generate(prompts, length, opt), references);
}

torch::Tensor LanguageModel::sample_bytes(const torch::Tensor& logits, double temperature) {
  if (temperature <= 0) return logits.argmax(-1);
  auto probs = torch::softmax(logits.to(torch::kFloat64) / temperature, -1);
  auto flat = probs.reshape({-1, probs.size(-1)});
  auto shape = logits.sizes().vec();
  shape.pop_back();
  return torch::multinomial(flat, 1).view(shape);
}

torch::Tensor LanguageModel::prompt_tokens(const std::vector<std::string>& prompts, int64_t keep,
                                           const torch::Device& device) {
  std::vector<torch::Tensor> rows;
  for (const auto& p : prompts) {
    TORCH_CHECK(p.size() == prompts.front().size(), "prompts of one generate() call must have one length");
    rows.push_back(bytes_to_tokens(p.size() > size_t(keep) ? p.substr(p.size() - size_t(keep)) : p));
  }
  return torch::stack(rows).to(device);
}

}  // namespace blocklab
