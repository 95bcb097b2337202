#include "train/adamw.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "util/error.h"

namespace blocklab {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, AdamWOptions opt, std::vector<bool> decay)
    : params_(std::move(params)), state_(params_.size()), decay_(std::move(decay)), opt_(opt) {
  if (decay_.empty()) decay_.assign(params_.size(), true);
  TORCH_CHECK(decay_.size() == params_.size(), "AdamW: one decay flag per parameter");
}

double AdamW::clip_grad_norm(double max_norm) {
  std::vector<torch::Tensor> norms;
  for (auto& [name, p] : params_)
    if (p.grad().defined()) norms.push_back(p.grad().norm().to(torch::kFloat64));
  if (norms.empty()) return 0.0;
  const double total = torch::stack(norms).norm().item<double>();
  clip_to(total, max_norm);
  return total;
}

void AdamW::clip_to(double total, double max_norm) {
  if (max_norm <= 0) return;
  // Scaled in every step (by exactly 1 when under the limit, which changes no bit), so a step
  // runs the same ops whatever its gradient: the profiler copies one step's shapes to the rest.
  const double scale = total > max_norm ? max_norm / (total + 1e-6) : 1.0;
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad().mul_(scale);
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (!p.grad().defined()) continue;
    auto& s = state_[i];
    if (!s.exp_avg.defined()) {
      s.exp_avg = torch::zeros_like(p);
      s.exp_avg_sq = torch::zeros_like(p);
    }
    const auto& g = p.grad();
    s.step += 1;
    if (decay_[i]) p.mul_(1.0 - lr * opt_.weight_decay);  // decoupled weight decay
    s.exp_avg.mul_(opt_.beta1).add_(g, 1.0 - opt_.beta1);
    s.exp_avg_sq.mul_(opt_.beta2).addcmul_(g, g, 1.0 - opt_.beta2);
    const double bc1 = 1.0 - std::pow(opt_.beta1, double(s.step));
    const double bc2 = 1.0 - std::pow(opt_.beta2, double(s.step));
    auto denom = (s.exp_avg_sq / bc2).sqrt_().add_(opt_.eps);
    p.addcdiv_(s.exp_avg, denom, -lr / bc1);
  }
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) p.mutable_grad().reset();
}

TensorMap AdamW::state_dict() const {
  TensorMap out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& s = state_[i];
    if (s.step == 0) continue;
    const auto& name = params_[i].first;
    out[name + ".exp_avg"] = s.exp_avg;
    out[name + ".exp_avg_sq"] = s.exp_avg_sq;
    out[name + ".step"] = torch::tensor({s.step}, torch::kInt64);
  }
  return out;
}

void AdamW::load_state_dict(const TensorMap& state, const std::string& source) {
  std::set<std::string> known;
  for (const auto& [name, p] : params_)
    for (const char* leaf : {".exp_avg", ".exp_avg_sq", ".step"}) known.insert(name + leaf);
  for (const auto& [key, t] : state)
    if (!known.count(key)) throw UserError(fmt::format("{}: unexpected optimizer state {}", source, key));
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    auto it = state.find(name + ".step");
    if (it == state.end()) {
      state_[i] = State{};
      continue;
    }
    auto m = state.find(name + ".exp_avg"), v = state.find(name + ".exp_avg_sq");
    if (m == state.end() || v == state.end() || !m->second.sizes().equals(p.sizes()) ||
        !v->second.sizes().equals(p.sizes()))
      throw UserError(fmt::format("{}: optimizer state for {} is missing or has the wrong shape", source, name));
    state_[i] = State{m->second.to(p.options(), /*non_blocking=*/false, /*copy=*/true),
                      v->second.to(p.options(), /*non_blocking=*/false, /*copy=*/true), it->second.item<int64_t>()};
  }
}

int64_t AdamW::steps_of(const std::string& name) const {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].first == name) return state_[i].step;
  return -1;
}

bool AdamW::decays(const std::string& name) const {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].first == name) return decay_[i];
  return false;
}

int64_t AdamW::max_steps_under(const std::string& prefix) const {
  int64_t most = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].first.rfind(prefix, 0) == 0) most = std::max(most, state_[i].step);
  return most;
}

}  // namespace blocklab
