#include "train/ema.h"

#include <fmt/format.h>

#include "train/checkpoint.h"
#include "util/error.h"

namespace blocklab {

Ema::Ema(const torch::nn::Module& model, const AdamW& opt, double decay) : model_(model), opt_(opt), decay_(decay) {
  torch::NoGradGuard no_grad;
  const auto& optimized = opt.params();
  for (const auto& p : model.named_parameters()) {
    // Owner and optimizer slot are read from the name once here, so update() compares no strings.
    int block = -1;
    if (p.key().rfind("blocks.", 0) == 0) block = std::stoi(p.key().substr(7));
    size_t index = 0;
    while (index < optimized.size() && optimized[index].first != p.key()) ++index;
    if (index == optimized.size()) throw std::logic_error("EMA of a parameter the optimizer does not update: " + p.key());
    entries_.push_back({p.key(), p.value(), p.value().detach().clone(), block, index});
  }
}

void Ema::update(int block) {
  torch::NoGradGuard no_grad;
  for (auto& e : entries_) {
    if (block >= 0 && e.block >= 0 && e.block != block) continue;
    const double n = double(opt_.steps_at(e.opt_index));
    const double d = std::min(decay_, (1.0 + n) / (10.0 + n));
    e.average.mul_(d).add_(e.param.detach(), 1.0 - d);
  }
}

TensorMap Ema::state() const {
  TensorMap out;
  for (const auto& e : entries_) out[e.name] = e.average;
  return out;
}

void Ema::load(const TensorMap& state, const std::string& source, const std::string& fresh_prefix) {
  torch::NoGradGuard no_grad;
  size_t found = 0;
  for (auto& e : entries_) {
    auto it = state.find(e.name);
    if (it == state.end() && !fresh_prefix.empty() && e.name.rfind(fresh_prefix, 0) == 0) continue;
    ++found;
    if (it == state.end()) throw UserError(fmt::format("{}: no average of {} (a checkpoint without EMA?)", source, e.name));
    if (!it->second.sizes().equals(e.average.sizes()))
      throw UserError(fmt::format("{}: the average of {} has shape {}, the model expects {}", source, e.name,
                                  c10::str(it->second.sizes()), c10::str(e.average.sizes())));
    e.average.copy_(it->second);
  }
  if (state.size() != found)
    throw UserError(fmt::format("{}: {} averaged tensors for a model of {} parameters", source, state.size(), entries_.size()));
}

TensorMap Ema::weights() const {
  auto out = named_tensors(model_);
  for (const auto& e : entries_) out[e.name] = e.average;
  return out;
}

void Ema::swap() {
  torch::NoGradGuard no_grad;
  for (auto& e : entries_) {
    auto tmp = e.param.detach().clone();
    e.param.copy_(e.average);
    e.average.copy_(tmp);
  }
}

}  // namespace blocklab
