#include "data/image_data.h"

#include <array>
#include <cmath>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "util/error.h"

namespace blocklab {
namespace {

ImageSplit head(const ImageSplit& s, int64_t limit) {
  if (limit <= 0 || limit >= s.size()) return s;
  return {s.images.slice(0, 0, limit), s.labels.slice(0, 0, limit), s.label_file};
}

void check_labels(const ImageSplit& s, int64_t classes) {
  const int64_t lo = s.labels.min().item<int64_t>(), hi = s.labels.max().item<int64_t>();
  if (lo < 0 || hi >= classes)
    throw UserError(fmt::format("{}: label values span [{}, {}], expected [0, {})", s.label_file, lo, hi, classes));
}

}  // namespace

ImageData ImageData::load(const std::string& dir, int64_t train_limit, int64_t test_limit) {
  ImageData d;
  d.train = head(load_idx_split(dir, "train"), train_limit);
  d.test = head(load_idx_split(dir, "t10k"), test_limit);
  check_labels(d.train, d.classes);
  check_labels(d.test, d.classes);
  if (d.train.images.sizes().slice(1) != d.test.images.sizes().slice(1))
    throw UserError(fmt::format("{}: train and test images differ in size", dir));
  // Pixel statistics from a 256-bin histogram: exact, and no float copy of the whole set.
  std::array<int64_t, 256> counts{};
  auto pixels = d.train.images.contiguous();
  const uint8_t* p = pixels.data_ptr<uint8_t>();
  for (int64_t i = 0, n = pixels.numel(); i < n; ++i) ++counts[p[i]];
  double sum = 0, sum_sq = 0, n = double(pixels.numel());
  for (int v = 0; v < 256; ++v) {
    const double x = v / 255.0;
    sum += x * double(counts[v]);
    sum_sq += x * x * double(counts[v]);
  }
  d.mean = sum / n;
  d.std = std::max(std::sqrt(std::max(sum_sq / n - d.mean * d.mean, 0.0)), 1e-6);
  return d;
}

Batch ImageData::batch(const ImageSplit& split, const torch::Tensor& indices, const torch::Device& device) const {
  auto images = split.images.index_select(0, indices).to(device).to(torch::kFloat32);
  images = (images / 255.0 - mean) / std;
  return {images, split.labels.index_select(0, indices).to(device)};
}

DataOrder::DataOrder(int64_t size, int64_t batch_size, uint64_t seed)
    : size_(size), batch_(std::min(batch_size, size)), steps_per_epoch_(size / batch_), seed_(seed) {}

torch::Tensor DataOrder::indices(int64_t step) {
  const int64_t epoch = step / steps_per_epoch_, pos = step % steps_per_epoch_;
  if (epoch != cached_epoch_) {
    std::vector<int64_t> perm(size_);
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + uint64_t(epoch));
    std::shuffle(perm.begin(), perm.end(), rng);
    perm_ = torch::tensor(perm, torch::kInt64);
    cached_epoch_ = epoch;
  }
  return perm_.slice(0, pos * batch_, (pos + 1) * batch_);
}

}  // namespace blocklab
