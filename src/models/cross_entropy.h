// Cross-entropy per example with the classes along the last dimension: the classifier's loss on
// the head's logits (and its chain's decisions are made from the same logits). libtorch's
// cross_entropy is log_softmax and nll_loss forward (more with label smoothing) and as many autograd
// nodes backward, each a few microseconds on a [128, 10] batch; here it is one pass each way.
#pragma once
#include <torch/torch.h>

namespace blocklab {

/// -log softmax(logits)[label] per example, with label smoothing s: the target is (1 - s) on the
/// label plus s / K on every class, as torch's cross_entropy(.., label_smoothing = s). logits
/// [..., K], labels int64 [...] in [0, K); returns [...], differentiable in the logits. CPU
/// float32/float64 runs the fused kernel (unless simd::set_fused_kernels(false)); anything else
/// cross_entropy_reference.
torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, double label_smoothing = 0.0);

/// The same through libtorch's cross_entropy: the reference of the tests.
torch::Tensor cross_entropy_reference(const torch::Tensor& logits, const torch::Tensor& labels,
                                      double label_smoothing = 0.0);

}  // namespace blocklab
