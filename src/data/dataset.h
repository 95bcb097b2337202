// What the trainer and every family know of data: splits of examples, a batch by index on a
// device, and what a model needs to be built for it. A family's data set implements this.
#pragma once
#include <torch/torch.h>

#include <string>

namespace blocklab {

enum class Split { Train, Test };

/// One batch. x is the input (images [N, C, H, W]; later tokens), y the answer (labels [N]).
struct Batch {
  torch::Tensor x, y;
};

/// What a model must know of its data. Image families fill the first four, language models the last two.
struct DataShape {
  int64_t channels = 0, height = 0, width = 0, classes = 0;
  int64_t vocab = 0, seq_len = 0;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size(Split split) const = 0;
  /// The examples `indices` (int64 [N]) of a split, ready for the model, on `device`.
  virtual Batch batch(Split split, const torch::Tensor& indices, const torch::Device& device) const = 0;
  virtual DataShape shape() const = 0;
  /// Where the data came from, for messages ("/usr/share/datasets/fashion-mnist").
  virtual std::string source() const = 0;
};

/// Which examples make up global step `step`: epoch = step / steps_per_epoch, each epoch a
/// permutation drawn from (seed, epoch). The last partial batch of an epoch is dropped, so a
/// resumed run sees exactly the batches the uninterrupted run would have seen.
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
