#include "data/image_data.h"

#include <array>
#include <cmath>

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
  return ImageData(head(load_idx_split(dir, "train"), train_limit), head(load_idx_split(dir, "t10k"), test_limit), dir);
}

ImageData::ImageData(ImageSplit train, ImageSplit test, std::string source)
    : train_(std::move(train)), test_(std::move(test)), source_(std::move(source)) {
  if (train_.size() == 0 || test_.size() == 0) throw UserError(fmt::format("{}: a split holds no images", source_));
  if (train_.images.sizes().slice(1) != test_.images.sizes().slice(1))
    throw UserError(fmt::format("{}: train images are {}, test images {}", source_,
                                c10::str(train_.images.sizes().slice(1)), c10::str(test_.images.sizes().slice(1))));
  const int64_t classes = train_.labels.max().item<int64_t>() + 1;
  if (classes < 2) throw UserError(fmt::format("{}: the training labels name fewer than 2 classes", train_.label_file));
  check_labels(train_, classes);
  check_labels(test_, classes);
  shape_.channels = train_.images.size(1);
  shape_.height = train_.images.size(2);
  shape_.width = train_.images.size(3);
  shape_.classes = classes;
  // Pixel statistics from a 256-bin histogram: exact, and no float copy of the whole set.
  std::array<int64_t, 256> counts{};
  auto pixels = train_.images.contiguous();
  const uint8_t* p = pixels.data_ptr<uint8_t>();
  for (int64_t i = 0, n = pixels.numel(); i < n; ++i) ++counts[p[i]];
  double sum = 0, sum_sq = 0, n = double(pixels.numel());
  for (int v = 0; v < 256; ++v) {
    const double x = v / 255.0;
    sum += x * double(counts[size_t(v)]);
    sum_sq += x * x * double(counts[size_t(v)]);
  }
  mean_ = sum / n;
  std_ = std::max(std::sqrt(std::max(sum_sq / n - mean_ * mean_, 0.0)), 1e-6);
}

Batch ImageData::batch(Split split, const torch::Tensor& indices, const torch::Device& device) const {
  const auto& s = of(split);
  auto images = s.images.index_select(0, indices).to(device).to(torch::kFloat32);
  images = (images / 255.0 - mean_) / std_;
  return {images, s.labels.index_select(0, indices).to(device)};
}

}  // namespace blocklab
