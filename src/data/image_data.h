// Image classification data in memory: uint8 images, normalized per batch on the way to the device,
// and a reproducible order (a fresh permutation per epoch derived from the seed), so that a resumed
// run sees exactly the batches the uninterrupted run would have seen.
#pragma once
#include <torch/torch.h>

#include "io/idx.h"

namespace blocklab {

struct Batch {
  torch::Tensor images;  // [N, 1, H, W] float, normalized, on the training device
  torch::Tensor labels;  // [N] int64
};

struct ImageData {
  ImageSplit train, test;
  double mean = 0, std = 1;  // of the training pixels in [0, 1]
  int64_t classes = 10;

  /// Loads `<dir>/{train,t10k}-*-ubyte[.gz]`, keeps the first `train_limit`/`test_limit` images
  /// (0: all) and checks that labels lie in [0, classes).
  static ImageData load(const std::string& dir, int64_t train_limit = 0, int64_t test_limit = 0);
  Batch batch(const ImageSplit& split, const torch::Tensor& indices, const torch::Device& device) const;
};

/// Which examples make up global step `step`: epoch = step / steps_per_epoch, each epoch a
/// permutation drawn from (seed, epoch). The last partial batch of an epoch is dropped.
class DataOrder {
 public:
  DataOrder(int64_t size, int64_t batch_size, uint64_t seed);
  torch::Tensor indices(int64_t step);
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t batch_size() const { return batch_; }

 private:
  int64_t size_, batch_, steps_per_epoch_;
  uint64_t seed_;
  int64_t cached_epoch_ = -1;
  torch::Tensor perm_;
};

}  // namespace blocklab
