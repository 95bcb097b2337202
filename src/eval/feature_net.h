// The feature network of blocklab's Fréchet distance. FID's Inception weights cannot be fetched
// here, so blocklab trains a small LeNet-like classifier on the data set's own training images
// with a fixed recipe and seed, once, and caches it under a hash of recipe and data
// (util/system.h cache_dir). Its 64-wide penultimate layer (before the ReLU) is the feature space.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "data/image_data.h"

namespace blocklab {

struct FeatureNetImpl : torch::nn::Module {
  static constexpr int64_t kFeatures = 64;
  FeatureNetImpl(int64_t channels, int64_t classes);
  torch::Tensor features(const torch::Tensor& x);  // standardized images [N, C, H, W] -> [N, 64]
  torch::Tensor forward(const torch::Tensor& x);   // logits [N, classes]
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::Tensor pixel_mean, pixel_std;  // of the training pixels in [0, 1]
};
TORCH_MODULE(FeatureNet);

/// A trained feature network and what is known of it.
struct FeatureNetwork {
  FeatureNet net{nullptr};
  std::string recipe;     // "lenet-64 ...": what was trained
  std::string hash;       // of recipe and training data: the cache key
  std::string path;       // the cached weights
  double test_accuracy = 0;

  /// Features [N, 64] (float32, CPU) and predicted classes [N] of uint8 images [N, C, H, W].
  torch::Tensor features(const torch::Tensor& images);
  torch::Tensor predict(const torch::Tensor& images);
  nlohmann::json to_json() const;
};

/// The feature network of `data`: loaded from the cache, or trained (about a minute for
/// Fashion-MNIST on one core) and cached atomically.
FeatureNetwork feature_network(const ImageData& data);

}  // namespace blocklab
