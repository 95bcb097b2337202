#include "eval/probe.h"

#include <cmath>

#include "util/seed.h"

namespace blocklab {

nlohmann::json RandomStepRow::to_json() const {
  return {{"radius", radius},
          {"update_change", update_change},
          {"random_mean", mean},
          {"random_std", std},
          {"z", z},
          {"fraction_better", fraction_better},
          {"random_changes", random_changes}};
}

std::vector<torch::Tensor> probe_gradient(const std::vector<torch::Tensor>& params, const ProbeLoss& loss) {
  torch::AutoGradMode grad_on(true);
  const auto value = loss();
  // autograd::grad, not backward: the parameters' own .grad (an optimizer's business) stays as it was.
  return torch::autograd::grad({value}, params, /*grad_outputs=*/{}, /*retain_graph=*/false,
                               /*create_graph=*/false, /*allow_unused=*/true);
}

double global_norm(const std::vector<torch::Tensor>& tensors) {
  double sum = 0;
  for (const auto& t : tensors) sum += t.to(torch::kFloat64).pow(2).sum().item<double>();
  return std::sqrt(sum);
}

double cosine(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double dot = 0;
  for (size_t i = 0; i < a.size(); ++i) dot += (a[i].to(torch::kFloat64) * b[i].to(torch::kFloat64)).sum().item<double>();
  const double na = global_norm(a), nb = global_norm(b);
  return na > 0 && nb > 0 ? dot / (na * nb) : 0.0;
}

double probe_clip(std::vector<torch::Tensor>& grads, double max_norm) {
  const double total = global_norm(grads), scale = clip_factor(total, max_norm);  // the trainer's rule
  if (scale != 1.0)
    for (auto& g : grads) g = g * scale;
  return total;
}

std::vector<torch::Tensor> sgd_update(const std::vector<torch::Tensor>& grads, double lr) {
  std::vector<torch::Tensor> out;
  for (const auto& g : grads) out.push_back(g * -lr);
  return out;
}

std::vector<torch::Tensor> adamw_update(AdamW& opt, const std::vector<torch::Tensor>& params,
                                        const std::vector<torch::Tensor>& grads, double lr) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> before;
  for (const auto& p : params) before.push_back(p.detach().clone());
  opt.zero_grad();  // every parameter undefined: AdamW skips those we give no gradient
  for (size_t i = 0; i < params.size(); ++i) {
    auto p = params[i];
    p.mutable_grad() = grads[i].detach().clone();
  }
  opt.step(lr);
  opt.zero_grad();
  std::vector<torch::Tensor> update;
  for (size_t i = 0; i < params.size(); ++i) {
    auto p = params[i];
    update.push_back(p.detach() - before[i]);
    p.copy_(before[i]);
  }
  return update;
}

std::vector<torch::Tensor> random_direction(const std::vector<torch::Tensor>& like, uint64_t seed, int64_t index,
                                            double norm) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(derive_seed(seed, Stream::ProbeDirection, uint64_t(index)));
  std::vector<torch::Tensor> raw;
  for (const auto& t : like)
    raw.push_back(at::normal(0.0, 1.0, t.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat64)));
  const double scale = norm / global_norm(raw);
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < like.size(); ++i) out.push_back((raw[i] * scale).to(like[i].options()));
  return out;
}

void summarize(RandomStepRow& row) {
  const auto& x = row.random_changes;
  const double n = double(x.size());
  double sum = 0;
  for (double v : x) sum += v;
  row.mean = n > 0 ? sum / n : 0;
  double ss = 0;
  int64_t better = 0;
  for (double v : x) {
    ss += (v - row.mean) * (v - row.mean);
    better += v < row.update_change;
  }
  row.std = n > 1 ? std::sqrt(ss / (n - 1)) : 0;
  // A constant random loss (std 0) leaves z undefined: NaN, written as null, rather than infinity.
  row.z = row.std > 0 ? (row.update_change - row.mean) / row.std : std::nan("");
  row.fraction_better = n > 0 ? double(better) / n : 0;
}

namespace {

// The loss with `step` added to the saved values, then the saved values back (by copy, so no
// rounding accumulates over thousands of trials).
double probe_trial(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& saved,
                   const std::vector<torch::Tensor>& step, const ProbeLoss& loss) {
  for (size_t i = 0; i < params.size(); ++i) {
    auto p = params[i];
    p.copy_(saved[i]).add_(step[i]);
  }
  const double value = loss().item<double>();
  for (size_t i = 0; i < params.size(); ++i) {
    auto p = params[i];
    p.copy_(saved[i]);
  }
  return value;
}

}  // namespace

RandomStepResult random_step_probe(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& update,
                                   const ProbeLoss& loss, const RandomStepOptions& options) {
  TORCH_CHECK(params.size() == update.size(), "random_step_probe: one update tensor per parameter");
  torch::NoGradGuard no_grad;
  RandomStepResult result;
  std::vector<torch::Tensor> saved;
  for (const auto& p : params) {
    saved.push_back(p.detach().clone());
    result.d += p.numel();
  }
  result.l0 = loss().item<double>();
  result.update_norm = global_norm(update);
  for (size_t r = 0; r < options.radii.size(); ++r) {
    RandomStepRow row;
    row.radius = options.radii[r];
    std::vector<torch::Tensor> scaled;
    for (const auto& u : update) scaled.push_back(u * row.radius);
    row.update_change = probe_trial(params, saved, scaled, loss) - result.l0;
    // The same directions at every radius (seeded by index only): radii compare like with like.
    for (int64_t i = 0; i < options.directions; ++i) {
      const auto v = random_direction(params, options.seed, i, row.radius * result.update_norm);
      row.random_changes.push_back(probe_trial(params, saved, v, loss) - result.l0);
      if (options.progress) options.progress(r, i + 1);
    }
    summarize(row);
    result.rows.push_back(std::move(row));
  }
  return result;
}

}  // namespace blocklab
