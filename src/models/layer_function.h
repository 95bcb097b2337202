// A transformer layer with adaLN (DiT's block, Peebles & Xie 2023, Sec. 3.2) as one autograd
// function, forward and backward written out:
//
//   (shift1, scale1, gate1, shift2, scale2, gate2) = SiLU(cond W^T + b)   (or SiLU(cond) W^T + b)
//   a = modulate(x, shift1, scale1)        h = x + gate1 * proj(attention(qkv(a)))
//   n = modulate(h, shift2, scale2)        out = h + gate2 * fc2(f(fc1(n)))
//
// Composed of the fused functions (models/modulation.h, dense.h, attention.h), the layer is about
// a dozen autograd nodes with their views, a split of the six modulations whose backward
// concatenates their gradients, and a sum of x's two gradients: on the default ViT step about
// 5% of the time went to autograd's engine and these small ops, not to the kernels. Here backward
// calls the same kernels in reverse order, writes the six modulations' gradients into one tensor
// and adds x's gradients in modulate's backward pass; adaLN's SiLU is its product's epilogue. The
// same tensors are saved, and every value is computed as the composed path computes it but for the
// rounding of two gradients, x's and adaLN's bias's (tests/test_model.cpp checks the bits).
#pragma once
#include <torch/torch.h>

#include "util/activation_math.h"

namespace blocklab {

/// A layer's linear maps, adaLN's first (biases may be undefined).
struct LayerWeights {
  torch::Tensor ada_w, ada_b, qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

/// Whether layer_function() takes x [N, T, d] and the condition [N, c] or [N, T, c]: training
/// (some input records a gradient), float32 on a CPU the fused kernels run on, the MLP fused,
/// `mask` undefined or [T, T], and set_layer_function(true).
bool layer_function_applies(const torch::Tensor& x, const torch::Tensor& cond, const LayerWeights& w, int64_t heads,
                            const torch::Tensor& mask);

/// The layer's output for x and the condition, with `heads` attention heads, the MLP's activation
/// `act`, adaLN's SiLU after its product (`silu_after`, AdaLNStyle::SiluAfter) or before it, and an
/// additive attention mask (or none); differentiable in x, cond and every weight.
torch::Tensor layer_function(const torch::Tensor& x, const torch::Tensor& cond, const LayerWeights& w, int64_t heads,
                             Activation act, bool silu_after, const torch::Tensor& mask);

/// Whether layers that can run as one function do (default) or compose the fused functions:
/// `bench step --composed-layers` times the two in one process.
void set_layer_function(bool on);

}  // namespace blocklab
