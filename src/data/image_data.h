// Labelled images in memory (uint8), normalized per batch on the way to the device. Size,
// channels and the number of classes come from the data.
#pragma once
#include "data/dataset.h"
#include "io/idx.h"

namespace blocklab {

class ImageData : public Dataset {
 public:
  /// Loads `<dir>/{train,t10k}-*-ubyte[.gz]` (MNIST layout), keeps the first `train_limit` /
  /// `test_limit` examples (0: all). Classes: the largest training label + 1; test labels must
  /// lie below it. UserError naming the file on anything inconsistent.
  static ImageData load(const std::string& dir, int64_t train_limit = 0, int64_t test_limit = 0);
  /// From splits already in memory (images [N, C, H, W] uint8, labels [N] int64).
  ImageData(ImageSplit train, ImageSplit test, std::string source);

  int64_t size(Split split) const override { return of(split).size(); }
  Batch batch(Split split, const torch::Tensor& indices, const torch::Device& device) const override;
  DataShape shape() const override { return shape_; }
  std::string source() const override { return source_; }

  const ImageSplit& of(Split split) const { return split == Split::Train ? train_ : test_; }
  double mean() const { return mean_; }
  double std() const { return std_; }

 private:
  ImageSplit train_, test_;
  std::string source_;
  DataShape shape_;
  double mean_ = 0, std_ = 1;  // of the training pixels in [0, 1]
};

}  // namespace blocklab
