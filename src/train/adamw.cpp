#include "train/adamw.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <ATen/record_function.h>

#include <fmt/format.h>

#include "util/error.h"
#include "util/simd.h"

namespace blocklab {

namespace {

using namespace simd;

// The CPU fast path: one pass over each parameter instead of a dozen ops (each its own pass, and
// ~10 us of dispatch for the ~75 small tensors of a block). The same formulas, element by element.
struct AdamWScalars {
  double decay_factor, beta1, beta2, eps, bc2, step_size;  // step_size = -lr / bc1
};

template <typename T>
BLOCKLAB_INLINE void adamw_elements(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t n,
                                    const AdamWScalars& s) {
  const T decay = T(s.decay_factor), b1 = T(s.beta1), b2 = T(s.beta2), eps = T(s.eps), bc2 = T(s.bc2);
  const T step = T(s.step_size), one_b1 = T(1.0 - s.beta1), one_b2 = T(1.0 - s.beta2);
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    m[i] = m[i] * b1 + one_b1 * gi;
    v[i] = v[i] * b2 + one_b2 * gi * gi;
    p[i] = p[i] * decay + step * (m[i] / (std::sqrt(v[i] / bc2) + eps));
  }
}
BLOCKLAB_ISAS void adamw_f32(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s) {
  adamw_elements(p, g, m, v, n, s);
}
BLOCKLAB_ISAS void adamw_f64(double* p, const double* g, double* m, double* v, int64_t n, const AdamWScalars& s) {
  adamw_elements(p, g, m, v, n, s);
}

// sum of x^2 in float64, four lanes at a time in a fixed order.
template <typename T>
BLOCKLAB_INLINE double squares(const T* __restrict x, int64_t n) {
  Vec<double> acc{};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const Vec<double> xi = {double(x[i]), double(x[i + 1]), double(x[i + 2]), double(x[i + 3])};
    acc += xi * xi;
  }
  double sum = lane_sum<double>(acc);
  for (; i < n; ++i) sum += double(x[i]) * double(x[i]);
  return sum;
}
BLOCKLAB_ISAS double squares_f32(const float* x, int64_t n) { return squares(x, n); }
BLOCKLAB_ISAS double squares_f64(const double* x, int64_t n) { return squares(x, n); }

// Whether the fast path takes these tensors: CPU, contiguous, all float or all double.
bool adamw_fusable(std::initializer_list<const torch::Tensor*> ts) {
  if (!fused_kernels_enabled()) return false;
  const auto type = (*ts.begin())->scalar_type();
  for (const auto* t : ts)
    if (!cpu_floating(*t) || !t->is_contiguous() || t->scalar_type() != type) return false;
  return true;
}

}  // namespace

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, AdamWOptions opt, std::vector<bool> decay)
    : params_(std::move(params)), state_(params_.size()), decay_(std::move(decay)), opt_(opt) {
  if (decay_.empty()) decay_.assign(params_.size(), true);
  TORCH_CHECK(decay_.size() == params_.size(), "AdamW: one decay flag per parameter");
}

double AdamW::clip_grad_norm(double max_norm) {
  std::vector<torch::Tensor> norms;
  double fused_squares = 0;
  for (auto& [name, p] : params_) {
    const auto& g = p.grad();
    if (!g.defined()) continue;
    if (!adamw_fusable({&g}))
      norms.push_back(g.norm().to(torch::kFloat64));
    else if (g.scalar_type() == torch::kFloat)
      fused_squares += squares_f32(g.data_ptr<float>(), g.numel());
    else
      fused_squares += squares_f64(g.data_ptr<double>(), g.numel());
  }
  const double op_squares = norms.empty() ? 0.0 : torch::stack(norms).pow(2).sum().item<double>();
  const double total = std::sqrt(fused_squares + op_squares);
  clip_to(total, max_norm);
  return total;
}

double clip_factor(double total, double max_norm) {
  return max_norm > 0 && total > max_norm ? max_norm / (total + 1e-6) : 1.0;
}

void AdamW::clip_to(double total, double max_norm) {
  if (max_norm <= 0) return;
  // Scaled in every step (by exactly 1 when under the limit, which changes no bit), so a step
  // runs the same ops whatever its gradient: the profiler copies one step's shapes to the rest.
  const double scale = clip_factor(total, max_norm);
  for (auto& [name, p] : params_) {
    auto& g = p.mutable_grad();
    if (!g.defined()) continue;
    if (!adamw_fusable({&g})) {
      g.mul_(scale);
    } else if (scale != 1.0) {  // (a loop, not an op: nothing for the profiler to see either way)
      AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "clip", [&] {
        auto* x = g.data_ptr<scalar_t>();
        for (int64_t i = 0, n = g.numel(); i < n; ++i) x[i] *= scalar_t(scale);
      });
    }
  }
}

void AdamW::step(double lr) {
  RECORD_FUNCTION("blocklab::adamw", std::vector<c10::IValue>());
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
    const double decay_factor = decay_[i] ? 1.0 - lr * opt_.weight_decay : 1.0;  // decoupled weight decay
    const double bc1 = 1.0 - std::pow(opt_.beta1, double(s.step));
    const double bc2 = 1.0 - std::pow(opt_.beta2, double(s.step));
    if (adamw_fusable({&p, &g, &s.exp_avg, &s.exp_avg_sq})) {
      const AdamWScalars k{decay_factor, opt_.beta1, opt_.beta2, opt_.eps, bc2, -lr / bc1};
      if (p.scalar_type() == torch::kFloat)
        adamw_f32(p.data_ptr<float>(), g.data_ptr<float>(), s.exp_avg.data_ptr<float>(), s.exp_avg_sq.data_ptr<float>(),
                  p.numel(), k);
      else
        adamw_f64(p.data_ptr<double>(), g.data_ptr<double>(), s.exp_avg.data_ptr<double>(),
                  s.exp_avg_sq.data_ptr<double>(), p.numel(), k);
      continue;
    }
    if (decay_[i]) p.mul_(decay_factor);
    s.exp_avg.mul_(opt_.beta1).add_(g, 1.0 - opt_.beta1);
    s.exp_avg_sq.mul_(opt_.beta2).addcmul_(g, g, 1.0 - opt_.beta2);
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
