// Synchronised shared modules (docs/distributed.md): when several blocks' updates are computed
// from the same weights, in one process (synchronous rounds) or one per process, the shared
// modules take one step with the sum of every block's gradient for them. Each update packs its
// shared gradients, followed by its own block's squared gradient norm, into one flat fp32 buffer;
// the buffers are summed (locally, or by one all-reduce per step across processes); every
// process then holds the same summed shared gradients and the same global norm:
//   ||g||^2 = sum over blocks of ||g_block||^2 + ||sum over blocks of g_shared||^2,
// the norm of the whole update the network takes, which gradient clipping uses.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>

#include "train/adamw.h"

namespace blocklab {

/// Sums a buffer in place across processes (c10d all-reduce); null in a single process.
using AllReduce = std::function<void(torch::Tensor&)>;

class SharedGradients {
 public:
  /// The parameters of `opt` named `shared.*` are the shared ones; the rest belong to blocks.
  explicit SharedGradients(const AdamW& opt);
  /// The shared gradients (zeros where backward did not reach) and the squared norm of block
  /// `block`'s own gradients; then resets the shared gradients so the next block's backward starts
  /// from none.
  torch::Tensor take(int block);
  /// Writes summed buffers' shared part back as the shared gradients; returns the global norm.
  double restore(const torch::Tensor& summed);

 private:
  std::vector<torch::Tensor> shared_, others_;
  std::vector<bool> reached_;  // shared parameters backward reaches (the same for every block)
  std::vector<std::string> other_names_;
  std::map<int, std::vector<size_t>> of_block_;  // a block's parameters among others_, found once
  int64_t numel_ = 0;
};

}  // namespace blocklab
