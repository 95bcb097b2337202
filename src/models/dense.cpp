#include "models/dense.h"

#include <atomic>

#include "models/activation.h"
#include "models/autograd.h"
#include "util/gemm.h"
#include "util/simd.h"

namespace blocklab {

namespace {

// Rows-by-features views of x [..., in] and of a result [..., out] built from it.
torch::Tensor rows(const torch::Tensor& x) { return x.reshape({-1, x.size(-1)}).contiguous(); }
std::vector<int64_t> shape_with_last(const torch::Tensor& x, int64_t last) {
  auto s = x.sizes().vec();
  s.back() = last;
  return s;
}

// No bias is an empty tensor.
const float* data_or_null(const torch::Tensor& b) { return b.numel() > 0 ? b.data_ptr<float>() : nullptr; }

// y [m, out] = x [m, in] W^T + b, then the epilogue.
torch::Tensor product_forward(const torch::Tensor& x2, const torch::Tensor& w, const torch::Tensor& b,
                              const gemm::Epilogue& epilogue, const char* name) {
  RECORD_FUNCTION(name, std::vector<c10::IValue>({x2, w}));
  const int64_t m = x2.size(0), in = x2.size(1), out = w.size(0);
  auto y = torch::empty({m, out}, x2.options());
  gemm::sgemm(m, out, in, {x2.data_ptr<float>(), in}, {w.data_ptr<float>(), in, /*transposed=*/true}, data_or_null(b),
              y.data_ptr<float>(), out, nullptr, epilogue);
  return y;
}

}  // namespace

namespace fused {

torch::Tensor dense_forward(const torch::Tensor& x2, const torch::Tensor& w, const torch::Tensor& b) {
  return product_forward(x2, w, b, {}, "blocklab::dense");
}

// db = dy's column sums, taken as dy^T is packed.
torch::autograd::tensor_list dense_backward(const torch::Tensor& dy, const torch::Tensor& x2, const torch::Tensor& w,
                                            std::array<bool, 3> wanted, const torch::Tensor& dx_factor) {
  const auto [want_dx, want_dw, want_db] = wanted;
  // (the profiler counts 2 m in out FLOPs per product: profile/flops.cpp)
  RECORD_FUNCTION("blocklab::dense_backward", std::vector<c10::IValue>({x2, w, int64_t(want_dx) + int64_t(want_dw)}));
  const int64_t m = x2.size(0), in = x2.size(1), out = w.size(0);
  torch::Tensor dx, dw, db;
  if (want_dx) {
    dx = torch::empty({m, in}, x2.options());
    gemm::sgemm(m, in, out, {dy.data_ptr<float>(), out}, {w.data_ptr<float>(), in}, nullptr, dx.data_ptr<float>(), in,
                nullptr, dx_factor.defined() ? gemm::Epilogue::multiply(dx_factor.data_ptr<float>()) : gemm::Epilogue{});
  }
  if (want_db) db = torch::empty({out}, w.options());
  if (want_dw) {
    dw = torch::empty({out, in}, w.options());
    gemm::sgemm(out, in, m, {dy.data_ptr<float>(), out, /*transposed=*/true}, {x2.data_ptr<float>(), in}, nullptr,
                dw.data_ptr<float>(), in, db.defined() ? db.data_ptr<float>() : nullptr);
  } else if (db.defined()) {
    db = dy.sum(0);
  }
  return {dx, dw, db};
}

// Neither the activation nor its slope needs a pass of its own over the [m, hidden] activations
// (the GELU's pass each way was 9% of the default step).
torch::Tensor hidden_activations(const torch::Tensor& x2, const torch::Tensor& w1, const torch::Tensor& b1, Activation a,
                                 float* slope) {
  return product_forward(x2, w1, b1, gemm::Epilogue::activate(a, slope), "blocklab::dense_activation");
}

}  // namespace fused

using namespace fused;

namespace {

class DenseFunction : public torch::autograd::Function<DenseFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x2, const torch::Tensor& w,
                               const torch::Tensor& b) {
    ctx->save_for_backward({x2, w});
    return dense_forward(x2, w, b);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    return dense_backward(grads[0].contiguous(), saved[0], saved[1], inputs_needing_grad(ctx, 0));
  }
};

// A transformer layer's MLP, y = f(x W1^T + b1) W2^T + b2, as one autograd function: the
// activation and its slope f' are computed in the first product's epilogue as it writes its
// result, and backward multiplies by the slope in the epilogue of the product that yields the
// hidden gradient, dh = (dy W2) * f'. Saved: x, the activations f(h) and the slope, as the
// separate layers saved.

class MlpFunction : public torch::autograd::Function<MlpFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x2, const torch::Tensor& w1,
                               const torch::Tensor& b1, const torch::Tensor& w2, const torch::Tensor& b2, Activation a) {
    auto slope = torch::empty({x2.size(0), w1.size(0)}, x2.options());
    const auto act = hidden_activations(x2, w1, b1, a, slope.data_ptr<float>());
    ctx->save_for_backward({x2, w1, act, slope, w2});
    return dense_forward(act, w2, b2);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x2 = saved[0], &w1 = saved[1], &act = saved[2], &slope = saved[3], &w2 = saved[4];
    const auto first_wanted = inputs_needing_grad(ctx, 0);
    const bool below = first_wanted[0] || first_wanted[1] || first_wanted[2];
    auto second = dense_backward(grads[0].contiguous(), act, w2, {below, ctx->needs_input_grad(3), ctx->needs_input_grad(4)}, slope);
    auto first = below ? dense_backward(second[0], x2, w1, first_wanted) : torch::autograd::tensor_list{{}, {}, {}};
    return {first[0], first[1], first[2], second[1], second[2], torch::Tensor()};
  }
};

bool f32_on_cpu(const torch::Tensor& t) {
  return !t.defined() || (t.device().is_cpu() && t.scalar_type() == torch::kFloat);
}

// A layer of `in` inputs that the GEMM runs: float32 weight [out, in] and bias [out] (or none).
bool layer_fusable(int64_t in, const torch::Tensor& w, const torch::Tensor& b) {
  return f32_on_cpu(w) && f32_on_cpu(b) && w.dim() == 2 && w.size(1) == in && (!b.defined() || b.numel() == w.size(0));
}

std::atomic<bool> g_mlp_fused{true};

}  // namespace

bool fused::dense_fusable(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return simd::fused_kernels_enabled() && gemm::available() && f32_on_cpu(x) && x.dim() >= 1 &&
         layer_fusable(x.size(-1), w, b);
}

bool fused::mlp_fusable(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                        const torch::Tensor& b2) {
  return g_mlp_fused && dense_fusable(x, w1, b1) && layer_fusable(w1.size(0), w2, b2);
}

torch::Tensor fused::bias_or_empty(const torch::Tensor& b, const torch::Tensor& w) {
  return b.defined() ? b.contiguous() : torch::empty({0}, w.options());
}

torch::Tensor dense(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!dense_fusable(x, weight, bias)) return torch::nn::functional::linear(x, weight, bias);
  const auto x2 = rows(x), w = weight.contiguous(), b = bias_or_empty(bias, weight);
  const auto y = records_grad(x, weight, bias) ? DenseFunction::apply(x2, w, b) : dense_forward(x2, w, b);
  return y.view(shape_with_last(x, weight.size(0)));
}

torch::Tensor dense(const torch::Tensor& x, const torch::nn::Linear& layer) { return dense(x, layer->weight, layer->bias); }

void set_mlp_fused(bool on) { g_mlp_fused = on; }

torch::Tensor mlp(const torch::Tensor& x, const torch::nn::Linear& fc1, const torch::nn::Linear& fc2, Activation a) {
  const auto &w1 = fc1->weight, &b1 = fc1->bias, &w2 = fc2->weight, &b2 = fc2->bias;
  if (!fused::mlp_fusable(x, w1, b1, w2, b2)) {
    const auto h = dense(x, w1);
    return dense(b1.defined() ? bias_activation(a, h, b1) : bias_activation_reference(a, h, torch::zeros({h.size(-1)}, h.options())), fc2);
  }
  const auto x2 = rows(x), w1c = w1.contiguous(), b1c = bias_or_empty(b1, w1), w2c = w2.contiguous(),
             b2c = bias_or_empty(b2, w2);
  const auto y = records_grad(x, w1, b1, w2, b2)
                     ? MlpFunction::apply(x2, w1c, b1c, w2c, b2c, a)
                     : dense_forward(hidden_activations(x2, w1c, b1c, a, /*slope=*/nullptr), w2c, b2c);
  return y.view(shape_with_last(x, w2.size(0)));
}

}  // namespace blocklab
