// An activation with its bias, f(x + b), as one fused CPU kernel: adaLN's SiLU, and the MLP's GELU
// where the GEMM's epilogue does not compute it (models/dense.h's mlp()).
// The bias add, the activation and, backward, the bias gradient (a sum over tokens) in one pass
// each instead of three ops. When training, the forward pass also stores the activation's slope
// (the same size as x, which is then not kept), so that the erf or the exponential is evaluated
// once per element: backward is a multiply.
// The activations' formulas: util/activation_math.h.
// Other devices, or simd::set_fused_kernels(false), take libtorch's ops (bias_activation_reference).
#pragma once
#include <torch/torch.h>

#include "util/activation_math.h"

namespace blocklab {

/// f(x + bias) for x [..., F] and bias [F]. Differentiable in both.
torch::Tensor bias_activation(Activation a, const torch::Tensor& x, const torch::Tensor& bias);
inline torch::Tensor bias_silu(const torch::Tensor& x, const torch::Tensor& bias) {
  return bias_activation(Activation::Silu, x, bias);
}

/// The same with libtorch's ops: torch::gelu(x + bias), torch::silu(x + bias).
torch::Tensor bias_activation_reference(Activation a, const torch::Tensor& x, const torch::Tensor& bias);

}  // namespace blocklab
