// A transformer's input sequence: its lead tokens (a class token, a noisy label), then the image's
// patch tokens, plus the positional embeddings, as one fused CPU pass forward and one backward.
//
// As libtorch ops it is a concatenation (a copy of every token), a broadcast add of the
// positions, and backward a split and a sum over the batch for the positions' gradient: the
// profiler showed them at ~150 us of a 15 ms ViT block step (a broadcast add over [N, T, d] runs
// far below memory speed). Other devices and types, or simd::set_fused_kernels(false), take
// those ops (token_sequence_reference).
#pragma once
#include <torch/torch.h>

#include <vector>

namespace blocklab {

/// cat({lead[0], .., lead[L-1], patches}, 1) + pos: each lead [N, d] (any strides; an expanded
/// class token is fine), patches [N, P, d], pos [1, L + P, d]. Returns [N, L + P, d].
/// Differentiable in all.
torch::Tensor token_sequence(const std::vector<torch::Tensor>& lead, const torch::Tensor& patches, const torch::Tensor& pos);

/// The same with libtorch's ops.
torch::Tensor token_sequence_reference(const std::vector<torch::Tensor>& lead, const torch::Tensor& patches,
                               const torch::Tensor& pos);

}  // namespace blocklab
