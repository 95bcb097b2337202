// A linear layer's product, y = x W^T + b, on the CPU through blocklab's own float32 GEMM
// (util/gemm.h): the forward product with the bias added as C is written, and both backward
// products (dx = dy W, dW = dy^T x). The GEMMs of a training step run at 1.4-2.2x the speed of
// libtorch 1.13's mm on OpenBLAS's AVX2 kernel, which this machine's environment selects, and at
// par with OpenBLAS's own AVX-512 kernel (docs/profiling.md).
// Other devices, other dtypes, a CPU without AVX-512, or simd::set_fused_kernels(false) take
// torch::nn::functional::linear.
#pragma once
#include <torch/torch.h>

namespace blocklab {

/// x [..., in], weight [out, in], bias [out] or undefined: x W^T + b, differentiable in all three.
torch::Tensor dense(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {});

/// The same through a module's parameters.
torch::Tensor dense(const torch::Tensor& x, const torch::nn::Linear& layer);

}  // namespace blocklab
