// Reader for the IDX format of MNIST and Fashion-MNIST (yann.lecun.com/exdb/mnist), gzipped or not.
#pragma once
#include <torch/torch.h>

#include <string>

namespace blocklab {

/// Reads an IDX file of unsigned bytes (magic 0x0000080N, N = number of dimensions) into a
/// uint8 tensor of that shape. `expected_dims` guards against swapped files.
/// Throws UserError naming the file on a missing, truncated or malformed file.
torch::Tensor read_idx(const std::string& path, int expected_dims);

/// Images [N, 1, H, W] (uint8) and labels [N] (int64) of one split.
struct ImageSplit {
  torch::Tensor images;
  torch::Tensor labels;
  std::string label_file;  // where the labels came from, for error messages
  int64_t size() const { return labels.size(0); }
};

/// Loads `<dir>/<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]`
/// (prefix "train" or "t10k") and checks that they agree.
ImageSplit load_idx_split(const std::string& dir, const std::string& prefix);

}  // namespace blocklab
