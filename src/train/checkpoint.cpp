#include "train/checkpoint.h"

#include <fmt/format.h>

#include "util/error.h"

namespace blocklab {

TensorMap named_tensors(const torch::nn::Module& model) {
  TensorMap out;
  for (const auto& p : model.named_parameters()) out[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) out[b.key()] = b.value();
  return out;
}

void load_weights(torch::nn::Module& model, const TensorMap& weights, const std::string& source) {
  torch::NoGradGuard no_grad;
  auto mine = named_tensors(model);
  for (auto& [name, t] : mine) {
    auto it = weights.find(name);
    if (it == weights.end()) throw UserError(fmt::format("{}: missing tensor {}", source, name));
    if (!it->second.sizes().equals(t.sizes()))
      throw UserError(fmt::format("{}: tensor {} has shape {}, the model expects {}", source, name,
                                  c10::str(it->second.sizes()), c10::str(t.sizes())));
    t.copy_(it->second);
  }
  for (const auto& [name, t] : weights)
    if (!mine.count(name)) throw UserError(fmt::format("{}: unexpected tensor {} (another model shape?)", source, name));
}

void save_checkpoint(const std::string& path, const torch::nn::Module& model, const AdamW& opt, int64_t step) {
  TensorMap all;
  for (const auto& [name, t] : named_tensors(model)) all["model." + name] = t;
  for (const auto& [name, t] : opt.state_dict()) all["optim." + name] = t;
  save_safetensors(path, all, {{"step", std::to_string(step)}, {"format", "blocklab-checkpoint-1"}});
}

int64_t load_checkpoint(const std::string& path, torch::nn::Module& model, AdamW& opt) {
  std::map<std::string, std::string> meta;
  auto all = load_safetensors(path, &meta);
  if (!meta.count("step")) throw UserError(fmt::format("{}: not a blocklab checkpoint (no step)", path));
  TensorMap weights, optim;
  for (auto& [name, t] : all) {
    if (name.rfind("model.", 0) == 0) weights[name.substr(6)] = t;
    else if (name.rfind("optim.", 0) == 0) optim[name.substr(6)] = t;
  }
  load_weights(model, weights, path);
  opt.load_state_dict(optim, path);
  return std::stoll(meta.at("step"));
}

}  // namespace blocklab
