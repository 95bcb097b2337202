#include "eval/frechet.h"

#include <stdexcept>

namespace blocklab {

FeatureStats feature_stats(const torch::Tensor& features) {
  if (features.dim() != 2 || features.size(0) < 2) throw std::invalid_argument("feature_stats needs [N >= 2, D]");
  const auto x = features.to(torch::kCPU, torch::kFloat64);
  const auto mean = x.mean(0);
  const auto centered = x - mean;
  return {mean, centered.t().matmul(centered) / double(x.size(0) - 1), x.size(0)};
}

torch::Tensor sqrt_psd(const torch::Tensor& m) {
  const auto sym = 0.5 * (m + m.t());  // exactly symmetric for eigh
  const auto [values, vectors] = torch::linalg::eigh(sym, "L");
  return (vectors * values.clamp_min(0).sqrt().unsqueeze(0)).matmul(vectors.t());
}

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  const auto root_b = sqrt_psd(b.cov);
  const auto inner = root_b.matmul(a.cov).matmul(root_b);  // symmetric PSD, same spectrum as S1 S2
  const auto [values, vectors] = torch::linalg::eigh(0.5 * (inner + inner.t()), "L");
  const double cross = values.clamp_min(0).sqrt().sum().item<double>();
  const double mean_term = (a.mean - b.mean).pow(2).sum().item<double>();
  return mean_term + a.cov.trace().item<double>() + b.cov.trace().item<double>() - 2 * cross;
}

}  // namespace blocklab
