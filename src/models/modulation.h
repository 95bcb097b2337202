// adaLN's two element-wise steps (DiT, Peebles & Xie 2023, Sec. 3.2), each one fused CPU kernel:
//
//   modulate(x, shift, scale) = LayerNorm(x) * (1 + scale) + shift   (LayerNorm without weights)
//   gated_add(x, gate, y)     = x + gate * y                           (the gated residual)
//
// and the two in a row, as a layer runs them between its attention and its MLP (gated_add_modulate).
//
// Unfused, each is four or five libtorch ops forward and as many backward (broadcast products,
// sums over tokens for the gradients of per-sample modulations), each a pass over the activations;
// the profiler showed them at a tenth of the ViT's step. Fused, each is one pass forward and one
// backward. Other devices, or simd::set_fused_kernels(false), take the unfused ops (the *_reference
// functions, also the tests' reference).
#pragma once
#include <torch/torch.h>

#include <array>

namespace blocklab {

/// The LayerNorm epsilon of every modulated norm here.
constexpr double kNormEpsilon = 1e-6;

/// LayerNorm over the last dimension of x [N, T, D] (no weights), times (1 + scale), plus shift;
/// shift and scale [N, 1, D] (per sample) or [N, T, D] (per token). Differentiable in all three.
torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale);

/// x + gate * y for x and y [N, T, D] and gate [N, 1, D] or [N, T, D]. Differentiable in all three.
torch::Tensor gated_add(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y);

/// h = gated_add(x, gate, y) and modulate(h, shift, scale) in one pass, {h, modulate(h)}: a
/// layer's residual update after attention and the MLP's modulation of it. Backward takes the
/// gradients of both (h's other use is the next residual add) and sums them in the same pass,
/// where separately autograd would add two tensors. Differentiable in all five.
std::array<torch::Tensor, 2> gated_add_modulate(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y,
                                                const torch::Tensor& shift, const torch::Tensor& scale);

/// The kernels behind these functions, without autograd: for a function that runs its own backward
/// (the transformer layer's, models/layer_function.h). The gradients of shift, scale and gate are
/// added to what their tensors hold (pass zeros); every tensor's last dimension is contiguous.
namespace fused {
/// What the kernels take: CPU float or double, x [N, T, D], each other operand [N, 1 or T, D] of x's type.
bool modulation_fusable(const torch::Tensor& x, const std::initializer_list<const torch::Tensor*>& others);
/// modulate(x, shift, scale), with LayerNorm's statistics for backward: {y, mean [N, T], rstd [N, T]}.
std::array<torch::Tensor, 3> modulate_forward(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale);
torch::Tensor gated_add_forward(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y);
/// {h, modulate(h), mean, rstd} of gated_add_modulate.
std::array<torch::Tensor, 4> gated_add_modulate_forward(const torch::Tensor& x, const torch::Tensor& gate,
                                                        const torch::Tensor& y, const torch::Tensor& shift,
                                                        const torch::Tensor& scale);
/// dx = the gradient of x through modulate from dout, plus dres (a gradient of x from its other
/// use) when it is defined.
void modulate_backward(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& mean,
                       const torch::Tensor& rstd, const torch::Tensor& dout, const torch::Tensor& dres,
                       const torch::Tensor& dx, const torch::Tensor& dshift, const torch::Tensor& dscale);
/// dy = dout * gate (x's gradient is dout itself).
void gated_add_backward(const torch::Tensor& gate, const torch::Tensor& y, const torch::Tensor& dout,
                        const torch::Tensor& dgate, const torch::Tensor& dy);
/// From dh (h's gradient from its other use; undefined: none) and dnormed: dx (h's whole gradient,
/// which is x's), dgate, dy, dshift, dscale.
void gated_add_modulate_backward(const torch::Tensor& h, const torch::Tensor& gate, const torch::Tensor& y,
                                 const torch::Tensor& scale, const torch::Tensor& mean, const torch::Tensor& rstd,
                                 const torch::Tensor& dh, const torch::Tensor& dnormed, const torch::Tensor& dx,
                                 const torch::Tensor& dgate, const torch::Tensor& dy, const torch::Tensor& dshift,
                                 const torch::Tensor& dscale);
}  // namespace fused

/// The same with libtorch's ops.
torch::Tensor modulate_reference(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale);
torch::Tensor gated_add_reference(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y);

}  // namespace blocklab
