// The inference chain of DiffusionBlocks over a discrete target (paper Fig. 3, App. H): z walks
// down the CDF-uniform noise levels, one Euler step each, every step run by the block that owns
// its level, towards the embedding of the denoiser's class (or byte) distribution. The
// classifier and the autoregressive language model share it.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "schedule/noise.h"

namespace blocklab {

/// Weights over classes that turn logits into the embedding passed between inference steps:
/// softmax(logits / temperature); temperature 0 is the one-hot argmax.
torch::Tensor class_weights(const torch::Tensor& logits, double temperature);

/// The inference chain (paper Fig. 3, App. H) over any denoiser: the logits after every step,
/// which step ran which block at which sigma, and the final z.
struct ChainResult {
  std::vector<double> sigmas;
  std::vector<int> blocks;
  std::vector<torch::Tensor> logits;
  torch::Tensor z;
};

/// `logits_of(z, sigma, block)` is one block's denoiser read out as class logits. Between steps
/// z takes an Euler step towards class_weights(logits) @ embeddings ([K, d]).
ChainResult run_chain(const Partition& partition, int steps, torch::Tensor z,
                      const std::function<torch::Tensor(const torch::Tensor& z, double sigma, int block)>& logits_of,
                      const torch::Tensor& embeddings, double temperature);

/// The chain's start for targets that are unit vectors in the last dimension d of `sizes`: z at
/// sigma_max, each coordinate of variance sigma_max^2 + 1/d (y has per-coordinate variance 1/d;
/// the reference code draws sqrt(1 + sigma^2), EDM's rule for data of unit variance).
torch::Tensor chain_start(at::IntArrayRef sizes, double sigma_max, const torch::TensorOptions& options);

}  // namespace blocklab
