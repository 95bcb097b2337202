// Rows scaled to unit length, as torch::nn::functional::normalize(x, {.dim = -1}) computes them:
// y = x / max(|x|, epsilon). The denoising targets (the label and token embeddings the blocks
// move towards, docs/method.md) are normalized every step; libtorch's normalize is four ops forward
// (norm, clamp_min, expand, div) and four autograd nodes backward, each a few microseconds on a
// [128, 64] batch: 1.7% of the default block step. Here it is one pass each way.
#pragma once
#include <torch/torch.h>

namespace blocklab {

/// x [..., D] with each row divided by its Euclidean norm, or by `epsilon` where the norm is
/// smaller; differentiable in x. CPU float32/float64 runs the fused kernel (unless
/// simd::set_fused_kernels(false)); anything else torch::nn::functional::normalize.
torch::Tensor unit_rows(const torch::Tensor& x, double epsilon = 1e-12);

/// The same through libtorch's ops: the reference of the tests.
torch::Tensor unit_rows_reference(const torch::Tensor& x, double epsilon = 1e-12);

}  // namespace blocklab
