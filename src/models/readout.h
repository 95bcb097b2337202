// The classifier's readout (models/vit.h): token 0 of the last layer's output, the final
// LayerNorm, in blocks mode EDM's output combination d = c_out h + c_skip z (Karras et al. 2022,
// Eq. 7), and the output adaLN's modulation d (1 + scale) + shift, the head's input. Through
// libtorch's ops that is eleven ops forward and as many autograd nodes backward on a [128, 64]
// batch, a few microseconds each: ~5% of the default block step. Here it is one pass each way.
#pragma once
#include <torch/torch.h>

namespace blocklab {

/// EDM's output combination of the readout (blocks mode): [N], [N] (constants, no gradient) and the
/// noisy input z [N, d]. Undefined c_out: the readout is the normed token itself (end-to-end).
struct ReadoutSkip {
  torch::Tensor c_out, c_skip, z;
};

/// x [N, T, d] (the last layer's output), `norm` the final LayerNorm over d, `shift_scale` [N, 2 d]
/// the output adaLN's product (shift, then scale): the head's input [N, d], differentiable in x,
/// the norm's parameters, shift_scale and z. CPU float32/float64 runs the fused kernel (unless
/// simd::set_fused_kernels(false)); anything else readout_reference.
torch::Tensor readout(const torch::Tensor& x, const torch::nn::LayerNorm& norm, const torch::Tensor& shift_scale,
                      const ReadoutSkip& skip = {});

/// The same through libtorch's ops: the reference of the tests.
torch::Tensor readout_reference(const torch::Tensor& x, const torch::nn::LayerNorm& norm,
                                const torch::Tensor& shift_scale, const ReadoutSkip& skip = {});

/// The final LayerNorm of token 0 of x [N, T, d], the token the classifier reads out: [N, d].
torch::Tensor first_token_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm);

}  // namespace blocklab
