#include "models/layers.h"
#include "models/modulation.h"

#include "models/activation.h"
#include "models/attention.h"
#include "models/autograd.h"
#include "models/dense.h"
#include "models/layer_function.h"
#include "util/seed.h"
#include "util/simd.h"

#include <algorithm>
#include <cmath>

namespace blocklab {


torch::Tensor sinusoidal_embedding(const torch::Tensor& t, int64_t dim, double max_period) {
  const int64_t half = dim / 2;
  const auto options = torch::TensorOptions().dtype(t.dtype()).device(t.device());
  const auto frequencies = [&] { return torch::exp(-std::log(max_period) * torch::arange(half, options) / double(half)); };
  // On the CPU the frequencies are computed once per thread (five small ops a step). (A CUDA tensor
  // is not kept in a thread_local: it would be freed after the CUDA runtime at exit.)
  thread_local struct {
    int64_t half = -1;
    double max_period = 0;
    torch::Tensor freqs;
  } cached;
  if (t.device().is_cpu() &&
      (cached.half != half || cached.max_period != max_period || cached.freqs.dtype() != options.dtype()))
    cached = {half, max_period, frequencies()};
  const auto args = t.unsqueeze(1) * (t.device().is_cpu() ? cached.freqs : frequencies()).unsqueeze(0);  // [N, half]
  if (records_grad(t)) return torch::cat({torch::cos(args), torch::sin(args)}, 1);
  auto out = torch::empty({t.size(0), 2 * half}, options);  // cos and sin written in place: no concatenation
  auto cos = out.narrow(1, 0, half), sin = out.narrow(1, half, half);
  torch::cos_out(cos, args);
  torch::sin_out(sin, args);
  return out;
}

NoiseEmbedderImpl::NoiseEmbedderImpl(int64_t cond_dim) {
  mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(kFrequencyDim, cond_dim), torch::nn::SiLU(),
                                                     torch::nn::Linear(cond_dim, cond_dim)));
}

torch::Tensor NoiseEmbedderImpl::embed(const torch::Tensor& c_noise) {
  // Linear, SiLU, Linear as one MLP on the GEMM (the Sequential keeps the parameters' names)
  const auto linear = [&](size_t i) { return torch::nn::Linear(mlp->ptr<torch::nn::LinearImpl>(i)); };
  return blocklab::mlp(sinusoidal_embedding(c_noise, kFrequencyDim), linear(0), linear(2), Activation::Silu);
}

torch::Tensor NoiseEmbedderImpl::forward(const torch::Tensor& c_noise) { return torch::silu(embed(c_noise)); }

AdaLNImpl::AdaLNImpl(int64_t cond_dim, int64_t hidden, int64_t chunks_, AdaLNStyle style_) : chunks(chunks_), style(style_) {
  proj = register_module("proj", torch::nn::Linear(cond_dim, chunks * hidden));
  torch::NoGradGuard no_grad;
  proj->weight.zero_();
  proj->bias.zero_();
}

torch::Tensor AdaLNImpl::product(const torch::Tensor& cond) {
  // (SiLU after the Linear: its bias is added in the fused activation, one pass instead of three ops)
  return style == AdaLNStyle::SiluAfter ? bias_silu(dense(cond, proj->weight), proj->bias) : dense(torch::silu(cond), proj);
}

std::vector<torch::Tensor> AdaLNImpl::forward(const torch::Tensor& cond) {
  auto m = product(cond);
  return (m.dim() == 2 ? m.unsqueeze(1) : m).chunk(chunks, /*dim=*/2);
}

TransformerLayerImpl::TransformerLayerImpl(const TransformerLayerOptions& o) : opt(o) {
  ada = register_module("ada", AdaLN(o.cond_dim, o.hidden, 6, o.ada_style));
  qkv = register_module("qkv", torch::nn::Linear(o.hidden, 3 * o.hidden));
  proj = register_module("proj", torch::nn::Linear(o.hidden, o.hidden));
  fc1 = register_module("fc1", torch::nn::Linear(o.hidden, o.mlp_ratio * o.hidden));
  fc2 = register_module("fc2", torch::nn::Linear(o.mlp_ratio * o.hidden, o.hidden));
}

torch::Tensor embed_patches(const torch::Tensor& images, const torch::nn::Conv2d& conv) {
  const auto& o = conv->options;
  const int64_t p = o.kernel_size()->at(0), c = images.size(1);
  TORCH_CHECK(o.kernel_size()->at(1) == p && o.stride()->at(0) == p && o.stride()->at(1) == p,
              "embed_patches: the convolution must be p x p with stride p");
  return dense(image_patches(images, p), conv->weight.view({conv->weight.size(0), c * p * p}), conv->bias);
}

torch::Tensor image_patches(const torch::Tensor& images, int64_t p) {
  const int64_t n = images.size(0), c = images.size(1), height = images.size(2), width = images.size(3);
  const int64_t rows = height / p, cols = width / p;  // (a remainder is dropped, as the convolution does)
  if (!simd::cpu_floating(images) || images.requires_grad() || !images.is_contiguous())
    return images.narrow(2, 0, rows * p)
        .narrow(3, 0, cols * p)
        .reshape({n, c, rows, p, cols, p})
        .permute({0, 2, 4, 1, 3, 5})  // [N, H/p, W/p, C, p, p]
        .reshape({n, rows * cols, c * p * p});
  // The same copy as a loop over runs of p pixels: libtorch's strided copy of the 6-d permutation
  // above took a patch-embedded step 190 us (its innermost dimension is only p long).
  auto out = torch::empty({n, rows * cols, c * p * p}, images.options());
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "image_patches", [&] {
    const scalar_t* src = images.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t q = 0; q < cols; ++q)
          for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t y = 0; y < p; ++y, dst += p)
              std::copy_n(src + ((i * c + ch) * height + r * p + y) * width + q * p, p, dst);
  });
  return out;
}

torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& positions) {
  const int64_t hd = x.size(-1), half = hd / 2;
  auto inv_freq = torch::pow(10000.0, -torch::arange(half, x.options()) / double(half));      // [hd/2]
  auto angles = positions.to(x.options()).unsqueeze(1) * inv_freq.unsqueeze(0);              // [T, hd/2]
  auto cos = torch::cat({angles.cos(), angles.cos()}, 1), sin = torch::cat({angles.sin(), angles.sin()}, 1);
  auto rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

torch::Tensor TransformerLayerImpl::attention(const torch::Tensor& x, const AttentionContext& ctx) {
  const int64_t n = x.size(0), t = x.size(1), h = opt.heads, hd = opt.hidden / opt.heads;
  auto packed = dense(x, qkv).view({n, t, 3, h, hd});
  if (!ctx.positions.defined() && !ctx.cache)  // one tensor in and one gradient out: no unpacking for autograd
    return dense(packed_attention(packed, ctx.mask).transpose(1, 2).reshape({n, t, opt.hidden}), proj);
  auto qkv_ = packed.permute({2, 0, 3, 1, 4});  // (3, N, h, T, hd)
  auto q = qkv_[0], k = qkv_[1], v = qkv_[2];
  if (ctx.positions.defined()) {
    q = rotary(q, ctx.positions);
    k = rotary(k, ctx.positions);
  }
  if (ctx.cache && ctx.cache->length() > 0) {
    k = torch::cat({ctx.cache->k, k}, 2);
    v = torch::cat({ctx.cache->v, v}, 2);
  }
  if (ctx.cache && ctx.keep) *ctx.cache = {k, v};
  auto y = blocklab::attention(q, k, v, ctx.mask).transpose(1, 2).reshape({n, t, opt.hidden});  // (N, T, d)
  return dense(y, proj);
}

torch::Tensor TransformerLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cond, const AttentionContext& ctx) {
  if (!ctx.positions.defined() && !ctx.cache) {  // training without rotations or a cache: one autograd function
    const LayerWeights w{ada->proj->weight, ada->proj->bias, qkv->weight, qkv->bias, proj->weight, proj->bias,
                         fc1->weight, fc1->bias, fc2->weight, fc2->bias};
    if (layer_function_applies(x, cond, w, opt.heads, ctx.mask))
      return layer_function(x, cond, w, opt.heads, Activation::Gelu, ada->style == AdaLNStyle::SiluAfter, ctx.mask);
  }
  const auto m = ada->forward(cond);  // shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
  // h = x + g1 * attention and the MLP's modulation of h in one pass.
  const auto [h, normed] = gated_add_modulate(x, m[2], attention(modulate(x, m[0], m[1]), ctx), m[3], m[4]);
  return gated_add(h, m[5], mlp(normed, fc1, fc2, Activation::Gelu));
}

BlockImpl::BlockImpl(const TransformerLayerOptions& o, int64_t num_layers) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers; ++i) layers->push_back(TransformerLayer(o));
}

torch::Tensor BlockImpl::forward(torch::Tensor x, const torch::Tensor& cond, const torch::Tensor& mask,
                                 std::vector<KVCache>* caches, bool keep, const torch::Tensor& positions) {
  if (caches) caches->resize(layers->size());
  for (size_t i = 0; i < layers->size(); ++i)
    x = layers[i]->as<TransformerLayer>()->forward(x, cond, {mask, caches ? &(*caches)[i] : nullptr, keep, positions});
  return x;
}

bool StackOptions::holds(int64_t b) const {
  return held.empty() || std::find(held.begin(), held.end(), b) != held.end();
}

void StackOptions::seed_block(int64_t b) const {
  torch::manual_seed(derive_seed(seed, Stream::Init, uint64_t(1 + b)));
}

Block held_block(const torch::nn::ModuleDict& blocks, int64_t b) {
  const auto key = std::to_string(b);
  TORCH_CHECK(blocks->contains(key), "block ", b, " is not held by this model");
  return Block(std::dynamic_pointer_cast<BlockImpl>(blocks->operator[](key)));
}

Block fetch_block(torch::nn::ModuleDict& blocks, int64_t b, const std::function<Block(int64_t)>& stream) {
  const auto key = std::to_string(b);
  if (stream && !blocks->contains(key)) {
    auto block = stream(b);
    for (const auto& held : blocks->keys()) {  // the block in memory goes first
      blocks->pop(held);
      blocks->unregister_module(held);
    }
    blocks->update({{key, block.ptr()}});
  }
  return held_block(blocks, b);
}

}  // namespace blocklab
