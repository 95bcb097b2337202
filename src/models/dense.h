// A linear layer's product, y = x W^T + b, on the CPU through blocklab's own float32 GEMM
// (util/gemm.h): the forward product with the bias added as C is written, and both backward
// products (dx = dy W, dW = dy^T x). The GEMMs of a training step run at 1.4-2.2x the speed of
// libtorch 1.13's mm on OpenBLAS's AVX2 kernel, which this machine's environment selects, and at
// par with OpenBLAS's own AVX-512 kernel (docs/profiling.md).
// Other devices, other dtypes, a CPU without AVX-512, or simd::set_fused_kernels(false) take
// torch::nn::functional::linear.
#pragma once
#include <torch/torch.h>

#include "util/activation_math.h"

namespace blocklab {

/// x [..., in], weight [out, in], bias [out] or undefined: x W^T + b, differentiable in all three.
torch::Tensor dense(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {});

/// The same through a module's parameters.
torch::Tensor dense(const torch::Tensor& x, const torch::nn::Linear& layer);

/// A transformer layer's MLP, fc2(f(fc1(x))) (fc1 with its bias), differentiable in x and all
/// parameters. On the GEMM, the activation is computed in fc1's product and its slope applied in
/// the product that yields backward's hidden gradient (no passes of their own over the
/// activations); otherwise dense() and bias_activation() (models/activation.h).
torch::Tensor mlp(const torch::Tensor& x, const torch::nn::Linear& fc1, const torch::nn::Linear& fc2, Activation a);

/// Whether mlp() runs as one function on the GEMM where it can (default) or always as dense(),
/// bias_activation(), dense(): `bench step --separate-mlp` times the two in one process.
void set_mlp_fused(bool fused);

}  // namespace blocklab
