// Scaled dot-product attention, softmax(q k^T / sqrt(D) + mask) v, with a fused CPU kernel.
//
// The transformers here attend over short sequences (18 tokens for the ViT, 2 x 128 for the
// block-wise language model) with narrow heads (16-64). libtorch 1.13's CPU path runs a batched
// matmul as hundreds of tiny GEMMs, then softmax, then another batched matmul, each a separate op
// with its own intermediate tensors; the profiler shows it at ~10 GFLOP/s, a fifth of the step.
// The fused kernel does one (sample, head) at a time in cache: scores, softmax and the weighted
// sum in one pass, keeping only the probabilities for backward. Queries run along the vector lanes
// (the softmax over keys is then a column operation), the products are register tiles of
// independent sums, and no sum is reassociated; the code is compiled for the x86-64 levels v4
// (AVX-512), v3 (AVX2, FMA) and the baseline, chosen at run time, and float32 runs 16 queries per
// vector where the CPU has AVX-512 (util/simd.h, docs/profiling.md). For short sequences of narrow
// heads, where the queries would leave much of a vector empty, a second kernel runs (sample, head)
// pairs along the lanes instead (attention_lanes.h; attention_kernel_for below).
// Other devices and layouts, or simd::set_fused_kernels(false), take libtorch's ops.
#pragma once
#include <torch/torch.h>

namespace blocklab {

/// softmax(q k^T / sqrt(D) + mask) v for q [N, H, Tq, D], k and v [N, H, Tk, D]; `mask` is
/// additive ([Tq, Tk], -inf where a query may not look) or undefined. Returns [N, H, Tq, D]
/// (a transposed view of an [N, Tq, H, D] tensor: `.transpose(1, 2).reshape(N, Tq, H * D)` is
/// free). Differentiable in q, k and v.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask = {});

/// attention() of the q, k and v in a packed projection qkv [N, T, 3, H, D] (the layer's one
/// linear map); returns [N, H, T, D] as attention() does. Its gradient is one [N, T, 3, H, D] tensor.
torch::Tensor packed_attention(const torch::Tensor& qkv, const torch::Tensor& mask = {});

/// packed_attention's kernel without autograd: for a function that runs its own backward (the
/// transformer layer's, models/layer_function.h).
namespace fused {
/// Whether the fused kernels take `mask` for Tq queries and Tk keys of `type`: none, or [Tq, Tk] of that type.
bool attention_mask_fusable(const torch::Tensor& mask, int64_t tq, int64_t tk, torch::ScalarType type);
/// Whether packed_attention(qkv, mask) runs the fused kernel.
bool packed_attention_fusable(const torch::Tensor& qkv, const torch::Tensor& mask);
/// A fused forward: the output [N, Tq, H, D] seen as [N, H, Tq, D] (the layout the output
/// projection reads), and what its backward reads besides q, k and v: the probabilities, P^T (one
/// head at a time) or P with the pairs along the lanes.
struct FusedForward {
  torch::Tensor o;
  bool paired = false;
  torch::Tensor p;
};
FusedForward packed_attention_forward(const torch::Tensor& qkv, const torch::Tensor& mask);
/// The gradient of qkv [N, T, 3, H, D], one tensor, from the output's dout [N, H, T, D].
torch::Tensor packed_attention_backward(const torch::Tensor& qkv, bool paired, const torch::Tensor& p,
                                        const torch::Tensor& dout);
}  // namespace fused

/// Which fused kernel runs: by shape (Auto), or one of the two whatever the shape (tests,
/// benchmarks): one head's queries along the vector lanes, or (sample, head) pairs along them
/// (models/attention_lanes.h).
enum class AttentionKernel { Auto, PerHead, PairLanes };
void set_attention_kernel(AttentionKernel kernel);
/// The kernel that runs Tq queries of head width `dim` in `type`: Auto picks the pairs for short
/// sequences of narrow heads that would leave much of a vector of queries empty.
AttentionKernel attention_kernel_for(int64_t tq, int64_t dim, torch::ScalarType type);

/// The same with libtorch's unfused ops (matmul, softmax, matmul): the reference of the tests, the
/// path on CUDA.
torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& mask = {});


}  // namespace blocklab
