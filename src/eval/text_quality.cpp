#include "eval/text_quality.h"

#include <cmath>
#include <unordered_set>

#include <fmt/format.h>

#include "data/text_data.h"
#include "families/lm/ar.h"
#include "util/error.h"

namespace blocklab {

namespace F = torch::nn::functional;

double distinct_ngrams(const std::vector<std::string>& texts, int n) {
  std::unordered_set<std::string> seen;
  int64_t total = 0;
  for (const auto& t : texts)
    for (size_t i = 0; i + size_t(n) <= t.size(); ++i, ++total) seen.insert(t.substr(i, size_t(n)));
  return total == 0 ? 0.0 : double(seen.size()) / double(total);
}

std::string samples_text(const std::vector<std::string>& prompts, const std::vector<std::string>& generated,
                         const std::vector<std::string>& references) {
  std::string out;
  for (size_t i = 0; i < prompts.size(); ++i)
    out += fmt::format("=== prompt {}\n{}\n--- generated\n{}\n--- reference\n{}\n\n", i, prompts[i], generated[i],
                       references[i]);
  return out;
}

double judge_bits(AutoregressiveLM& judge, const std::vector<std::string>& prompts,
                  const std::vector<std::string>& continuations) {
  torch::NoGradGuard no_grad;
  judge.lm()->eval();
  const int64_t window = judge.lm()->opt.seq_len;
  double bits = 0;
  int64_t bytes = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = prompts[i].empty() ? std::string("\n") : prompts[i];
    const auto& c = continuations[i];
    if (c.empty()) continue;
    if (int64_t(p.size() + c.size()) > window)
      throw UserError("judge: prompt and continuation exceed the judge's data.seq_len = " + std::to_string(window));
    auto tokens = bytes_to_tokens(p + c).unsqueeze(0).to(judge.lm()->device());
    const int64_t t = tokens.size(1);
    auto logits = judge.next_byte_logits(tokens.narrow(1, 0, t - 1));  // row j predicts byte j + 1
    const int64_t first = int64_t(p.size()) - 1, n = int64_t(c.size());
    auto ce = F::cross_entropy(logits[0].narrow(0, first, n), tokens[0].narrow(0, first + 1, n),
                               F::CrossEntropyFuncOptions().reduction(torch::kSum));
    bits += ce.item<double>() / std::log(2.0);
    bytes += n;
  }
  return bytes == 0 ? 0.0 : bits / double(bytes);
}

}  // namespace blocklab
