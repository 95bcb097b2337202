#include "eval/fd.h"

#include <fmt/format.h>

#include "eval/feature_net.h"
#include "eval/frechet.h"
#include "io/safetensors.h"
#include "util/error.h"

namespace blocklab {

namespace {

// Subsets whose 1/N are evenly spaced from 1/n to 4/n: N = n, n/1.75, n/2.5, n/3.25, n/4.
constexpr int kFitPoints = 5;

}  // namespace

FdCurve frechet_curve(const torch::Tensor& features, const FeatureStats& real) {
  const int64_t n = features.size(0);
  FdCurve c;
  for (int j = 0; j < kFitPoints; ++j) {
    const int64_t m = std::max<int64_t>(2, int64_t(double(n) / (1.0 + 0.75 * j)));
    c.points.push_back({m, frechet_distance(feature_stats(features.narrow(0, 0, m)), real)});
  }
  c.at_n = c.points.front().second;
  c.infinity = extrapolate_to_infinity(c.points);
  return c;
}

double extrapolate_to_infinity(const std::vector<std::pair<int64_t, double>>& points) {
  if (points.size() < 2) throw std::logic_error("extrapolation needs two points");
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& [n, fd] : points) {
    const double x = 1.0 / double(n);
    sx += x, sy += fd, sxx += x * x, sxy += x * fd;
  }
  const double k = double(points.size()), slope = (k * sxy - sx * sy) / (k * sxx - sx * sx);
  return (sy - slope * sx) / k;
}

FrechetReport frechet_report(const ImageData& data, Split reference, const torch::Tensor& generated,
                             const torch::Tensor& labels, const FrechetOptions& opt) {
  const auto& real = data.of(reference);
  const int64_t n = generated.size(0);
  if (n < 8) throw UserError(fmt::format("Fréchet distance: {} generated images are too few (at least 8)", n));
  auto net = feature_network(data);
  auto gen_features = net.features(generated);
  auto real_features = net.features(real.images);
  const auto real_stats = feature_stats(real_features);

  FrechetReport r;
  r.samples = n;
  r.reference = real.size();
  r.features = net.to_json();
  const auto gen = frechet_curve(gen_features, real_stats);
  r.fd = gen.at_n, r.fd_infinity = gen.infinity, r.fd_by_samples = gen.points;
  // The floor: as many real training images as generated ones, against the same reference.
  const auto& train = data.of(Split::Train);
  const auto floor = frechet_curve(net.features(train.images.narrow(0, 0, std::min(n, train.size()))), real_stats);
  r.fd_floor = floor.at_n, r.fd_floor_infinity = floor.infinity;

  const auto predicted = net.predict(generated);
  const auto correct = predicted.eq(labels.cpu()).to(torch::kFloat64);
  r.accuracy = correct.mean().item<double>();
  for (int64_t k = 0; k < data.shape().classes; ++k) {
    const auto mask = labels.cpu().eq(k);
    r.class_accuracy.push_back(mask.any().item<bool>() ? correct.masked_select(mask).mean().item<double>() : 0.0);
  }
  if (!opt.save_features.empty())
    save_safetensors(opt.save_features, {{"generated", gen_features}, {"real", real_features}, {"generated_labels", labels.cpu()}},
                     {{"feature_network", net.recipe}, {"feature_hash", net.hash}, {"format", "blocklab-fd-features-1"}});
  return r;
}

nlohmann::json FrechetReport::to_json() const {
  auto points = nlohmann::json::array();
  for (const auto& [m, fd] : fd_by_samples) points.push_back({{"samples", m}, {"fd", fd}});
  return {{"fd", fd},
          {"fd_infinity", fd_infinity},
          {"fd_floor", fd_floor},
          {"fd_floor_infinity", fd_floor_infinity},
          {"fd_by_samples", points},
          {"fd_samples", samples},
          {"fd_reference_examples", reference},
          {"fd_features", features},
          {"fd_class_accuracy", class_accuracy},
          {"fd_accuracy", accuracy}};
}

std::vector<std::string> FrechetReport::lines() const {
  std::string per_class;
  for (size_t k = 0; k < class_accuracy.size(); ++k) per_class += fmt::format(" {}:{:.0f}", k, 100 * class_accuracy[k]);
  return {
      fmt::format("FD {:.3f} from {} samples; extrapolated to infinitely many {:.3f}", fd, samples, fd_infinity),
      fmt::format("floor (as many real training images) {:.3f}; extrapolated {:.3f}", fd_floor, fd_floor_infinity),
      fmt::format("feature network: {} , test accuracy {:.2f}%", features.value("network", ""),
                  100 * features.value("test_accuracy", 0.0)),
      fmt::format("generated images classified as their class: {:.1f}% (per class, %:{})", 100 * accuracy, per_class),
  };
}

}  // namespace blocklab
