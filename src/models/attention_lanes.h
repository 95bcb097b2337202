// The fused attention's kernel for short sequences (models/attention.h chooses it): L (sample,
// head) pairs run along the L lanes of a vector, each lane its own attention problem.
//
// The other kernel puts one head's queries along the lanes; a sequence of 17 or 18 tokens then
// fills two 16-float vectors to a little over half, and every score, exponential and product over
// them pays for the padding. With pairs along the lanes nothing is padded (but the last group of
// pairs), the softmax and all five products are plain vector arithmetic, and what remains is
// regrouping q, k, v and the outputs, L x L register transposes (simd::transpose_block).
// Sums run in the same order in every lane; no sum is reassociated.
#pragma once
#include <torch/torch.h>

namespace blocklab::pair_lanes {

/// The attention kernels' lanes per vector of this element type (16 floats with
/// simd::wide_vectors(), else Vec's): here, pairs per vector.
int64_t lanes(torch::ScalarType type);

/// softmax(q k^T / sqrt(D) + mask) v into `o`; q [N, H, Tq, D], k and v [N, H, Tk, D] and `o`
/// [N, H, Tq, D] with any strides but a contiguous last dimension; mask [Tq, Tk] contiguous or
/// undefined. Returns what backward reads besides q, k and v: the probabilities P with the pairs
/// along the lanes, [G, Tq, Tk, L] for G = ceil(N H / L) groups.
torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
                      const torch::Tensor& o);

/// The gradients of q, k and v from the forward's inputs, its P and dO, written into dq, dk, dv
/// (laid out as the caller wants them; the last dimension contiguous). q, k and v are regrouped
/// again rather than kept regrouped from the forward pass: a copy written there and read here
/// cost more, in a training step whose tensors do not stay in the caches, than the transposes.
void backward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& p,
              const torch::Tensor& dout, const torch::Tensor& dq, const torch::Tensor& dk, const torch::Tensor& dv);

}  // namespace blocklab::pair_lanes
