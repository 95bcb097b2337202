#include "models/layer_function.h"

#include <atomic>

#include "models/attention.h"
#include "models/autograd.h"
#include "models/dense.h"
#include "models/modulation.h"

namespace blocklab {

namespace {

std::atomic<bool> g_layer_function{true};

// The mask is a constant beside the tensors autograd tracks (an undefined tensor cannot be an
// input of a custom function).
struct Constants {
  int64_t heads;
  Activation act;
  bool silu_after;  // adaLN's SiLU after its product (in the product's epilogue), else none there
  torch::Tensor mask;
};

// What backward reads, in the order it is done with them: each is released after its last use, as
// autograd releases a composed layer's saved tensors node by node, so that the gradients allocated
// next reuse memory still in cache (kept to the end, the one function was 1.5% slower per step).
enum Saved { kZ, kHidden, kSlope, kFc2W, kNormed, kFc1W, kH, kY, kMean2, kRstd2, kO, kProjW, kPacked, kP, kA, kQkvW,
             kX, kMean1, kRstd1, kM, kAdaIn, kAdaSlope, kAdaW, kCount };

class LayerFunction : public torch::autograd::Function<LayerFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& ada_in, const torch::Tensor& ada_w, const torch::Tensor& ada_b,
                               const torch::Tensor& qkv_w, const torch::Tensor& qkv_b, const torch::Tensor& proj_w,
                               const torch::Tensor& proj_b, const torch::Tensor& fc1_w, const torch::Tensor& fc1_b,
                               const torch::Tensor& fc2_w, const torch::Tensor& fc2_b, const Constants& k) {
    const int64_t n = x.size(0), t = x.size(1), d = x.size(2);
    // the modulations m [N, 1 or T, 6d]: adaLN's product, its SiLU in the epilogue (slope kept)
    const auto ada2 = ada_in.view({-1, ada_in.size(-1)});
    torch::Tensor ada_slope;
    if (k.silu_after) ada_slope = torch::empty({ada2.size(0), ada_w.size(0)}, x.options());
    const auto m = (k.silu_after ? fused::hidden_activations(ada2, ada_w, ada_b, Activation::Silu, ada_slope.data_ptr<float>())
                                 : fused::dense_forward(ada2, ada_w, ada_b))
                       .view({n, ada_in.dim() == 2 ? 1 : t, 6 * d});
    const auto c = m.chunk(6, 2);
    // attention: a = modulate(x), h = x + gate1 * proj(attention(qkv(a)))
    const auto [a, mean1, rstd1] = fused::modulate_forward(x, c[0], c[1]);
    const auto a2 = a.view({n * t, d});
    const auto packed = fused::dense_forward(a2, qkv_w, qkv_b).view({n, t, 3, k.heads, d / k.heads});
    const auto att = fused::packed_attention_forward(packed, k.mask);
    const auto o2 = att.o.transpose(1, 2).reshape({n * t, d});  // (a view: o is [N, T, H, D] underneath)
    const auto y = fused::dense_forward(o2, proj_w, proj_b).view({n, t, d});
    // MLP: n = modulate(h), out = h + gate2 * fc2(f(fc1(n)))
    const auto [h, normed, mean2, rstd2] = fused::gated_add_modulate_forward(x, c[2], y, c[3], c[4]);
    const auto normed2 = normed.view({n * t, d});
    auto slope = torch::empty({n * t, fc1_w.size(0)}, x.options());
    const auto hidden = fused::hidden_activations(normed2, fc1_w, fc1_b, k.act, slope.data_ptr<float>());
    const auto z = fused::dense_forward(hidden, fc2_w, fc2_b).view({n, t, d});
    std::vector<torch::Tensor> saved(kCount);
    saved[kZ] = z, saved[kHidden] = hidden, saved[kSlope] = slope, saved[kFc2W] = fc2_w, saved[kNormed] = normed2;
    saved[kFc1W] = fc1_w, saved[kH] = h, saved[kY] = y, saved[kMean2] = mean2, saved[kRstd2] = rstd2, saved[kO] = o2;
    saved[kProjW] = proj_w, saved[kPacked] = packed, saved[kP] = att.p, saved[kA] = a2, saved[kQkvW] = qkv_w;
    saved[kX] = x, saved[kMean1] = mean1, saved[kRstd1] = rstd1, saved[kM] = m, saved[kAdaIn] = ada2;
    saved[kAdaSlope] = ada_slope, saved[kAdaW] = ada_w;
    // (saved_data rather than save_for_backward, whose tensors live until backward returns; none is
    // an output of this function, so none holds this node alive. Without save_for_backward there is
    // also no check that an input was not modified in place before backward: nothing here does that.)
    ctx->saved_data["saved"] = saved;
    ctx->saved_data["heads"] = k.heads;
    ctx->saved_data["ada_in"] = ada_in.sizes();
    ctx->saved_data["paired"] = att.paired;
    return fused::gated_add_forward(h, c[5], z);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    TORCH_CHECK(ctx->saved_data.count("saved") == 1,
                "layer_function: its saved tensors are released by its first backward (retain_graph is not supported)");
    auto s = ctx->saved_data["saved"].toTensorVector();
    ctx->saved_data.erase("saved");
    const auto done = [&](std::initializer_list<Saved> used) {
      for (auto i : used) s[i].reset();
    };
    const auto& x = s[kX];
    const int64_t n = x.size(0), t = x.size(1), d = x.size(2), heads = ctx->saved_data["heads"].toInt();
    const auto wanted = [&](size_t weight) {
      return std::array<bool, 3>{true, ctx->needs_input_grad(weight), ctx->needs_input_grad(weight + 1)};
    };
    auto dout = grads[0].contiguous();
    grads.clear();
    const auto c = s[kM].chunk(6, 2);
    auto dm = torch::zeros(s[kM].sizes(), s[kM].options());  // the modulations' gradients, added chunk by chunk
    const auto dc = dm.chunk(6, 2);
    // out = h + gate2 * z
    auto dz = torch::empty_like(s[kZ]);
    fused::gated_add_backward(c[5], s[kZ], dout, dc[5], dz);
    done({kZ});
    // z = fc2(f(fc1(n))): the slope applied in the product that yields f's gradient
    auto fc2 = fused::dense_backward(dz.view({n * t, d}), s[kHidden], s[kFc2W], wanted(10), s[kSlope]);
    dz.reset();
    done({kHidden, kSlope, kFc2W});
    auto fc1 = fused::dense_backward(fc2[0], s[kNormed], s[kFc1W], wanted(8));
    fc2[0].reset();
    done({kNormed, kFc1W});
    // h's gradient from out (dout) and from n; it is x's through the residual
    auto dh = torch::empty_like(s[kH]), dy = torch::empty_like(s[kY]);
    fused::gated_add_modulate_backward(s[kH], c[2], s[kY], c[4], s[kMean2], s[kRstd2], dout, fc1[0].view({n, t, d}), dh,
                                       dc[2], dy, dc[3], dc[4]);
    dout.reset(), fc1[0].reset();
    done({kH, kY, kMean2, kRstd2});
    auto proj = fused::dense_backward(dy.view({n * t, d}), s[kO], s[kProjW], wanted(6));
    dy.reset();
    done({kO, kProjW});
    auto dpacked = fused::packed_attention_backward(s[kPacked], ctx->saved_data["paired"].toBool(), s[kP],
                                                    proj[0].view({n, t, heads, d / heads}).transpose(1, 2));
    proj[0].reset();
    done({kPacked, kP});
    auto qkv = fused::dense_backward(dpacked.view({n * t, 3 * d}), s[kA], s[kQkvW], wanted(4));
    dpacked.reset();
    done({kA, kQkvW});
    // a = modulate(x): x's gradient through it plus the residual's, dh, in the same pass
    auto dx = torch::empty_like(x);
    fused::modulate_backward(x, c[1], s[kMean1], s[kRstd1], qkv[0].view({n, t, d}), dh, dx, dc[0], dc[1]);
    // m = SiLU(ada_in W^T + b) (or without the SiLU): its product's gradients from dm times the slope
    auto dpre = dm.view({-1, 6 * d});
    if (s[kAdaSlope].defined()) dpre.mul_(s[kAdaSlope]);
    auto ada = fused::dense_backward(dpre, s[kAdaIn], s[kAdaW], inputs_needing_grad(ctx, 1));
    if (ada[0].defined()) ada[0] = ada[0].view(ctx->saved_data["ada_in"].toIntVector());
    return {dx, ada[0], ada[1], ada[2], qkv[1], qkv[2], proj[1], proj[2], fc1[1], fc1[2], fc2[1], fc2[2], torch::Tensor()};
  }
};

}  // namespace

bool layer_function_applies(const torch::Tensor& x, const torch::Tensor& cond, const LayerWeights& w, int64_t heads,
                            const torch::Tensor& mask) {
  if (!g_layer_function.load(std::memory_order_relaxed) || x.dim() != 3 || x.scalar_type() != torch::kFloat) return false;
  const int64_t n = x.size(0), t = x.size(1), d = x.size(2);
  if (!records_grad(x, cond, w.ada_w, w.ada_b, w.qkv_w, w.qkv_b, w.proj_w, w.proj_b, w.fc1_w, w.fc1_b, w.fc2_w, w.fc2_b))
    return false;
  if ((cond.dim() != 2 && (cond.dim() != 3 || cond.size(1) != t)) || cond.size(0) != n || d % heads != 0 ||
      w.ada_w.size(0) != 6 * d || w.qkv_w.size(0) != 3 * d || w.proj_w.size(0) != d || w.fc2_w.size(0) != d)
    return false;
  if (!fused::modulation_fusable(x, {}) || !fused::dense_fusable(cond, w.ada_w, w.ada_b) ||
      !fused::dense_fusable(x, w.qkv_w, w.qkv_b) || !fused::dense_fusable(x, w.proj_w, w.proj_b) ||
      !fused::mlp_fusable(x, w.fc1_w, w.fc1_b, w.fc2_w, w.fc2_b))
    return false;
  return fused::attention_mask_fusable(mask, t, t, x.scalar_type());
}

torch::Tensor layer_function(const torch::Tensor& x, const torch::Tensor& cond, const LayerWeights& w, int64_t heads,
                             Activation act, bool silu_after, const torch::Tensor& mask) {
  using fused::bias_or_empty;
  const auto contiguous = [](const torch::Tensor& t) { return t.contiguous(); };
  return LayerFunction::apply(contiguous(x), silu_after ? contiguous(cond) : torch::silu(cond), contiguous(w.ada_w),
                              bias_or_empty(w.ada_b, w.ada_w), contiguous(w.qkv_w), bias_or_empty(w.qkv_b, w.qkv_w),
                              contiguous(w.proj_w), bias_or_empty(w.proj_b, w.proj_w), contiguous(w.fc1_w),
                              bias_or_empty(w.fc1_b, w.fc1_w), contiguous(w.fc2_w), bias_or_empty(w.fc2_b, w.fc2_w),
                              Constants{heads, act, silu_after, mask.defined() ? mask.contiguous() : mask});
}

void set_layer_function(bool on) { g_layer_function = on; }

}  // namespace blocklab
