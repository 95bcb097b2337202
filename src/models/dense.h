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

/// The products behind these functions, without autograd: for a function that runs its own
/// backward (the transformer layer's, models/layer_function.h). x2 is [m, in], contiguous; a bias
/// is an empty tensor for none.
namespace fused {
/// Whether dense(x, w, b) runs on the GEMM: float32 on a CPU it runs on, fused kernels on.
bool dense_fusable(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);
/// Whether mlp() runs as one function: dense_fusable for both layers, and set_mlp_fused(true).
bool mlp_fusable(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                 const torch::Tensor& b2);
/// b contiguous, or an empty tensor where it is undefined.
torch::Tensor bias_or_empty(const torch::Tensor& b, const torch::Tensor& w);
/// x2 W^T + b: [m, out].
torch::Tensor dense_forward(const torch::Tensor& x2, const torch::Tensor& w, const torch::Tensor& b);
/// The gradients of y = x2 W^T + b from dy [m, out] (contiguous), those `wanted` (else undefined):
/// {dx = dy W (times dx_factor elementwise, when defined, in the product's epilogue), dW = dy^T x2, db}.
std::vector<torch::Tensor> dense_backward(const torch::Tensor& dy, const torch::Tensor& x2, const torch::Tensor& w,
                                          std::array<bool, 3> wanted, const torch::Tensor& dx_factor = {});
/// The MLP's hidden activations f(x2 W1^T + b1), computed in the product's epilogue with their
/// slope f' written to `slope` [m, hidden] (nullptr: not written).
torch::Tensor hidden_activations(const torch::Tensor& x2, const torch::Tensor& w1, const torch::Tensor& b1, Activation a,
                                 float* slope);
}  // namespace fused

}  // namespace blocklab
