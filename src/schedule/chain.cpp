#include "schedule/chain.h"

#include <cmath>

namespace blocklab {

namespace F = torch::nn::functional;

torch::Tensor class_weights(const torch::Tensor& logits, double temperature) {
  // temperature 1: softmax, so weights @ embeddings = E[y | z], the denoiser's estimate.
  // Lower sharpens toward the mode; 0 is the one-hot argmax.
  if (temperature <= 0) return F::one_hot(logits.argmax(-1), logits.size(-1)).to(logits.dtype());
  return torch::softmax(logits / temperature, -1);
}

ChainResult run_chain(const Partition& partition, int steps, torch::Tensor z,
                      const std::function<torch::Tensor(const torch::Tensor&, double, int)>& logits_of,
                      const torch::Tensor& embeddings, double temperature) {
  ChainResult out;
  out.sigmas = partition.inference_levels(steps);
  for (size_t i = 0; i < out.sigmas.size(); ++i) {
    const double s = out.sigmas[i];
    const int block = partition.block_of(s);
    auto logits = logits_of(z, s, block);
    out.blocks.push_back(block);
    out.logits.push_back(logits);
    if (i + 1 < out.sigmas.size())
      z = euler_step(z, class_weights(logits, temperature).matmul(embeddings), s, out.sigmas[i + 1]);
  }
  out.z = z;
  return out;
}

torch::Tensor chain_start(at::IntArrayRef sizes, double sigma_max, const torch::TensorOptions& options) {
  const double d = double(sizes.back());
  return torch::randn(sizes, options) * std::sqrt(sigma_max * sigma_max + 1.0 / d);
}

}  // namespace blocklab
