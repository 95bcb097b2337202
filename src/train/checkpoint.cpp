#include "train/checkpoint.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include "util/error.h"

namespace blocklab {

TensorMap named_tensors(const torch::nn::Module& model) {
  TensorMap out;
  for (const auto& p : model.named_parameters()) out[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) out[b.key()] = b.value();
  return out;
}

void load_weights(torch::nn::Module& model, const TensorMap& weights, const std::string& source,
                  const std::string& fresh_prefix) {
  torch::NoGradGuard no_grad;
  auto mine = named_tensors(model);
  for (auto& [name, t] : mine) {
    auto it = weights.find(name);
    if (it == weights.end() && !fresh_prefix.empty() && name.rfind(fresh_prefix, 0) == 0) continue;
    if (it == weights.end()) throw UserError(fmt::format("{}: missing tensor {}", source, name));
    if (!it->second.sizes().equals(t.sizes()))
      throw UserError(fmt::format("{}: tensor {} has shape {}, the model expects {}", source, name,
                                  c10::str(it->second.sizes()), c10::str(t.sizes())));
    t.copy_(it->second);
  }
  for (const auto& [name, t] : weights)
    if (!mine.count(name)) throw UserError(fmt::format("{}: unexpected tensor {} (another model shape?)", source, name));
}

TensorMap training_state(const torch::nn::Module& model, const AdamW& opt, const Ema* ema) {
  TensorMap all;
  for (const auto& [name, t] : named_tensors(model)) all["model." + name] = t;
  for (const auto& [name, t] : opt.state_dict()) all["optim." + name] = t;
  if (ema)
    for (const auto& [name, t] : ema->state()) all["ema." + name] = t;
  return all;
}

void restore_training_state(const TensorMap& all, torch::nn::Module& model, AdamW& opt, Ema* ema,
                            const std::string& source, const std::string& fresh_prefix) {
  TensorMap weights, optim, averages;
  for (auto& [name, t] : all) {
    if (name.rfind("model.", 0) == 0) weights[name.substr(6)] = t;
    else if (name.rfind("optim.", 0) == 0) optim[name.substr(6)] = t;
    else if (ema && name.rfind("ema.", 0) == 0) averages[name.substr(4)] = t;
    else throw UserError(fmt::format("{}: unexpected tensor {} (not model., optim. or ema. of this run)", source, name));
  }
  load_weights(model, weights, source, fresh_prefix);
  opt.load_state_dict(optim, source);
  if (ema) ema->load(averages, source, fresh_prefix);
}

void save_checkpoint(const std::string& path, const torch::nn::Module& model, const AdamW& opt,
                     const CheckpointState& state, const Ema* ema) {
  // JSON numbers print the shortest text that reads back to the same double: exact round trips.
  save_safetensors(path, training_state(model, opt, ema),
                   {{"step", std::to_string(state.step)},
                    {"train_seconds", nlohmann::json(state.train_seconds).dump()},
                    {"window", state.window.dump()},
                    {"config", state.config},
                    {"held_block", std::to_string(state.held_block)},
                    {"format", "blocklab-checkpoint-2"}});
}

std::string describe_weights(const std::string& config_toml) {
  try {
    const auto t = toml::parse(config_toml);
    return fmt::format("{} mode, B={}, L={}, d={}, seed {}", t["model"]["mode"].value_or(std::string("?")),
                       t["model"]["blocks"].value_or(int64_t(0)), t["model"]["layers"].value_or(int64_t(0)),
                       t["model"]["hidden"].value_or(int64_t(0)), t["train"]["seed"].value_or(int64_t(0)));
  } catch (const toml::parse_error&) {
    return "an unreadable config";
  }
}

CheckpointState read_checkpoint(const std::string& path, const std::string& expected_config, TensorMap& tensors) {
  std::map<std::string, std::string> meta;
  tensors = load_safetensors(path, &meta);
  if (!meta.count("step")) throw UserError(fmt::format("{}: not a blocklab checkpoint (no step)", path));
  if (!expected_config.empty() && meta["config"] != expected_config)
    throw UserError(fmt::format("{}: a checkpoint of another run ({}); this run is {}", path,
                                meta["config"].empty() ? std::string("no config recorded") : describe_weights(meta["config"]),
                                describe_weights(expected_config)));
  CheckpointState state;
  state.config = meta["config"];
  try {
    size_t used = 0;
    state.step = std::stoll(meta.at("step"), &used);
    if (used != meta.at("step").size() || state.step < 0) throw std::invalid_argument("step");
    if (meta.count("train_seconds")) state.train_seconds = nlohmann::json::parse(meta.at("train_seconds")).get<double>();
    if (meta.count("window")) state.window = nlohmann::json::parse(meta.at("window"));
    if (meta.count("held_block")) state.held_block = std::stoi(meta.at("held_block"));
  } catch (const std::exception&) {
    throw UserError(fmt::format("{}: malformed checkpoint metadata (step \"{}\")", path, meta.at("step")));
  }
  return state;
}

CheckpointState load_checkpoint(const std::string& path, torch::nn::Module& model, AdamW& opt,
                                const std::string& expected_config, Ema* ema) {
  TensorMap all;
  const auto state = read_checkpoint(path, expected_config, all);
  restore_training_state(all, model, opt, ema, path);
  return state;
}

}  // namespace blocklab
