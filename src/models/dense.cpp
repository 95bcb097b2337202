#include "models/dense.h"

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

// No bias is an empty tensor (an autograd function's inputs must be defined tensors).
const float* data_or_null(const torch::Tensor& b) { return b.numel() > 0 ? b.data_ptr<float>() : nullptr; }

// y [m, out] = x [m, in] W^T + b.
torch::Tensor dense_forward(const torch::Tensor& x2, const torch::Tensor& w, const torch::Tensor& b) {
  RECORD_FUNCTION("blocklab::dense", std::vector<c10::IValue>({x2, w}));
  const int64_t m = x2.size(0), in = x2.size(1), out = w.size(0);
  auto y = torch::empty({m, out}, x2.options());
  gemm::sgemm(m, out, in, {x2.data_ptr<float>(), in}, {w.data_ptr<float>(), in, /*transposed=*/true}, data_or_null(b),
              y.data_ptr<float>(), out);
  return y;
}

class DenseFunction : public torch::autograd::Function<DenseFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x2, const torch::Tensor& w,
                               const torch::Tensor& b) {
    ctx->save_for_backward({x2, w});
    return dense_forward(x2, w, b);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x2 = saved[0], &w = saved[1];
    // (the profiler counts 2 m in out FLOPs per product: profile/flops.cpp)
    const int64_t products = int64_t(ctx->needs_input_grad(0)) + int64_t(ctx->needs_input_grad(1));
    RECORD_FUNCTION("blocklab::dense_backward", std::vector<c10::IValue>({x2, w, products}));
    const auto dy = grads[0].contiguous();
    const int64_t m = x2.size(0), in = x2.size(1), out = w.size(0);
    torch::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {  // dx [m, in] = dy [m, out] W [out, in]
      dx = torch::empty({m, in}, x2.options());
      gemm::sgemm(m, in, out, {dy.data_ptr<float>(), out}, {w.data_ptr<float>(), in}, nullptr, dx.data_ptr<float>(), in);
    }
    if (ctx->needs_input_grad(2)) db = torch::empty({out}, w.options());
    if (ctx->needs_input_grad(1)) {  // dW [out, in] = dy^T [out, m] x [m, in], and db = dy's column sums as dy^T is packed
      dw = torch::empty({out, in}, w.options());
      gemm::sgemm(out, in, m, {dy.data_ptr<float>(), out, /*transposed=*/true}, {x2.data_ptr<float>(), in}, nullptr,
                  dw.data_ptr<float>(), in, db.defined() ? db.data_ptr<float>() : nullptr);
    } else if (db.defined()) {
      db = dy.sum(0);
    }
    return {dx, dw, db};
  }
};

bool dense_fusable(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (!simd::fused_kernels_enabled() || !gemm::available()) return false;
  const auto on_cpu_f32 = [](const torch::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == torch::kFloat; };
  if (!on_cpu_f32(x) || !on_cpu_f32(w) || (b.defined() && !on_cpu_f32(b))) return false;
  return x.dim() >= 1 && w.dim() == 2 && w.size(1) == x.size(-1) && (!b.defined() || b.numel() == w.size(0));
}

}  // namespace

torch::Tensor dense(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!dense_fusable(x, weight, bias)) return torch::nn::functional::linear(x, weight, bias);
  const auto x2 = rows(x), w = weight.contiguous();
  const auto b = bias.defined() ? bias.contiguous() : torch::empty({0}, weight.options());
  const bool grad = torch::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() ||
                                                      (bias.defined() && bias.requires_grad()));
  const auto y = grad ? DenseFunction::apply(x2, w, b) : dense_forward(x2, w, b);
  return y.view(shape_with_last(x, weight.size(0)));
}

torch::Tensor dense(const torch::Tensor& x, const torch::nn::Linear& layer) { return dense(x, layer->weight, layer->bias); }

}  // namespace blocklab
