// The MLP's activation with its bias, gelu(x + b), as one fused CPU kernel: the bias add, the GELU
// and, backward, the bias gradient (a sum over tokens) in one pass each instead of three ops. When
// training, the forward pass also stores GELU's slope (the same size as x, which is then not kept),
// so that the erf and the exponential are evaluated once per element: backward is a multiply.
// GELU is the exact form, x * Phi(x) (Hendrycks & Gimpel 2016); in float32 the normal CDF uses
// the erf of Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as libtorch's own vectorised GELU does.
// Other devices, or simd::set_fused_kernels(false), take libtorch's ops (bias_gelu_reference).
#pragma once
#include <torch/torch.h>

namespace blocklab {

/// gelu(x + bias) for x [..., F] and bias [F]. Differentiable in both.
torch::Tensor bias_gelu(const torch::Tensor& x, const torch::Tensor& bias);

/// The same with libtorch's ops: torch::gelu(x + bias).
torch::Tensor bias_gelu_reference(const torch::Tensor& x, const torch::Tensor& bias);

}  // namespace blocklab
