#include "eval/feature_net.h"

#include <filesystem>

#include <fmt/format.h>

#include "io/safetensors.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "util/progress.h"
#include "util/seed.h"
#include "util/system.h"

namespace blocklab {

namespace {

// The fixed recipe. Changing any of it changes the hash, so old caches are never reused.
constexpr int kEpochs = 2, kMinSteps = 300, kBatch = 128;  // small data sets still get 300 steps
constexpr double kLr = 1e-3;
constexpr uint64_t kSeed = 0;
constexpr int64_t kChunk = 1000;  // images per forward pass when extracting features

// FNV-1a, 64 bits: a stable hash of bytes (std::hash is not stable across builds).
uint64_t fnv1a(const void* data, size_t size, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

uint64_t hash_tensor(const torch::Tensor& t, uint64_t h) {
  auto c = t.contiguous().cpu();
  return fnv1a(c.data_ptr(), size_t(c.numel()) * c.element_size(), h);
}

torch::Tensor standardize(const FeatureNet& net, const torch::Tensor& images) {
  return (images.to(torch::kFloat32) / 255.0 - net->pixel_mean) / net->pixel_std;
}

double accuracy(FeatureNetwork& f, const ImageSplit& split) {
  return f.predict(split.images).eq(split.labels).to(torch::kFloat64).mean().item<double>();
}

}  // namespace

FeatureNetImpl::FeatureNetImpl(int64_t channels, int64_t classes) {
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 16, 5).padding(2)));
  conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 5)));
  fc1 = register_module("fc1", torch::nn::Linear(32 * 4 * 4, kFeatures));
  fc2 = register_module("fc2", torch::nn::Linear(kFeatures, classes));
  pixel_mean = register_buffer("pixel_mean", torch::zeros({}));
  pixel_std = register_buffer("pixel_std", torch::ones({}));
}

torch::Tensor FeatureNetImpl::features(const torch::Tensor& x) {
  auto h = torch::max_pool2d(torch::relu(conv1->forward(x)), 2);
  h = torch::max_pool2d(torch::relu(conv2->forward(h)), 2);
  h = torch::adaptive_avg_pool2d(h, {4, 4}).flatten(1);  // any image size
  return fc1->forward(h);
}

torch::Tensor FeatureNetImpl::forward(const torch::Tensor& x) { return fc2->forward(torch::relu(features(x))); }

torch::Tensor FeatureNetwork::features(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  net->eval();
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < images.size(0); i += kChunk)
    out.push_back(net->features(standardize(net, images.narrow(0, i, std::min(kChunk, images.size(0) - i)))));
  return torch::cat(out);
}

torch::Tensor FeatureNetwork::predict(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  return net->fc2->forward(torch::relu(features(images))).argmax(1);
}

nlohmann::json FeatureNetwork::to_json() const {
  return {{"network", recipe}, {"hash", hash}, {"test_accuracy", test_accuracy}, {"dimensions", FeatureNetImpl::kFeatures}};
}

FeatureNetwork feature_network(const ImageData& data) {
  const auto& train = data.of(Split::Train);
  const auto shape = data.shape();
  FeatureNetwork f;
  f.recipe = fmt::format("lenet-{} (conv 16-32, {} epochs and at least {} steps, batch {}, Adam lr {}, seed {})",
                         FeatureNetImpl::kFeatures, kEpochs, kMinSteps, kBatch, kLr, kSeed);
  uint64_t h = fnv1a(f.recipe.data(), f.recipe.size());
  h = hash_tensor(train.labels, hash_tensor(train.images, h));
  f.hash = fmt::format("{:016x}", h);
  f.path = cache_dir() + "/fd-features-" + f.hash + ".safetensors";
  torch::manual_seed(derive_seed(kSeed, Stream::Init, 0));
  f.net = FeatureNet(shape.channels, shape.classes);
  if (std::filesystem::exists(f.path)) {
    std::map<std::string, std::string> meta;
    load_weights(*f.net, load_safetensors(f.path, &meta), f.path);
    f.test_accuracy = std::stod(meta.at("test_accuracy"));
    return f;
  }
  fmt::print(stderr, "fd: training the feature network once for {} ({}); cached as {}\n", data.source(), f.recipe, f.path);
  {
    torch::NoGradGuard no_grad;
    f.net->pixel_mean.fill_(data.mean());
    f.net->pixel_std.fill_(data.std());
  }
  AdamW opt(f.net->named_parameters().pairs(), AdamWOptions{0.9, 0.999, 1e-8, 0.0});
  DataOrder order(train.size(), kBatch, kSeed);
  const int64_t steps = std::max<int64_t>(kEpochs * order.steps_per_epoch(), kMinSteps);
  Progress progress(steps, "fd features");
  f.net->train();
  for (int64_t step = 0; step < steps; ++step) {
    auto idx = order.indices(step);
    auto loss = torch::cross_entropy_loss(f.net->forward(standardize(f.net, train.images.index_select(0, idx))),
                                          train.labels.index_select(0, idx));
    loss.backward();
    opt.step(kLr);
    opt.zero_grad();
    if (step % 20 == 0 || step + 1 == steps) progress.update(step + 1, fmt::format("loss {:.3f}", loss.item<double>()));
  }
  progress.finish();
  f.test_accuracy = accuracy(f, data.of(Split::Test));
  std::filesystem::create_directories(cache_dir());
  save_safetensors(f.path, named_tensors(*f.net),
                   {{"recipe", f.recipe}, {"test_accuracy", nlohmann::json(f.test_accuracy).dump()}, {"format", "blocklab-fd-features-1"}});
  fmt::print(stderr, "fd: feature network test accuracy {:.2f}%\n", 100 * f.test_accuracy);
  return f;
}

}  // namespace blocklab
