#include "models/unit_rows.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>

#include "models/autograd.h"
#include "util/simd.h"

namespace blocklab {

namespace {

// Row r's norm in norms[r] (unclamped: backward needs to know whether epsilon stood in for it),
// y = x / max(norm, epsilon).
template <typename T>
void forward_rows(const T* x, T* y, T* norms, int64_t rows, int64_t dim, T epsilon) {
  for (int64_t r = 0; r < rows; ++r, x += dim, y += dim) {
    T squares = 0;
    for (int64_t j = 0; j < dim; ++j) squares += x[j] * x[j];
    norms[r] = std::sqrt(squares);
    const T denominator = std::max(norms[r], epsilon);
    for (int64_t j = 0; j < dim; ++j) y[j] = x[j] / denominator;
  }
}

// dx = (dy - y (y . dy)) / norm where the norm counted, dy / epsilon where epsilon stood in for it
// (the clamp passes no gradient to the norm).
template <typename T>
void backward_rows(const T* y, const T* dy, const T* norms, T* dx, int64_t rows, int64_t dim, T epsilon) {
  for (int64_t r = 0; r < rows; ++r, y += dim, dy += dim, dx += dim) {
    const bool clamped = norms[r] < epsilon;
    T along = 0;
    if (!clamped)
      for (int64_t j = 0; j < dim; ++j) along += y[j] * dy[j];
    const T denominator = clamped ? epsilon : norms[r];
    for (int64_t j = 0; j < dim; ++j) dx[j] = (dy[j] - y[j] * along) / denominator;
  }
}

int64_t row_count(const torch::Tensor& x) { return x.numel() / std::max<int64_t>(1, x.size(-1)); }

std::array<torch::Tensor, 2> unit_rows_forward(const torch::Tensor& x, double epsilon) {
  RECORD_FUNCTION("blocklab::unit_rows", std::vector<c10::IValue>({x}));
  auto y = torch::empty_like(x, torch::MemoryFormat::Contiguous);
  auto norms = torch::empty({row_count(x)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "unit_rows", [&] {
    forward_rows<scalar_t>(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), norms.data_ptr<scalar_t>(), norms.numel(),
                           x.size(-1), scalar_t(epsilon));
  });
  return {y, norms};
}

class UnitRows : public torch::autograd::Function<UnitRows> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double epsilon) {
    auto [y, norms] = unit_rows_forward(x, epsilon);
    ctx->save_for_backward({y, norms});
    ctx->saved_data["epsilon"] = epsilon;
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &y = saved[0], &norms = saved[1];
    const auto dy = grads[0].contiguous();
    RECORD_FUNCTION("blocklab::unit_rows_backward", std::vector<c10::IValue>({dy}));
    auto dx = torch::empty_like(y);
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "unit_rows backward", [&] {
      backward_rows<scalar_t>(y.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), norms.data_ptr<scalar_t>(),
                              dx.data_ptr<scalar_t>(), norms.numel(), y.size(-1),
                              scalar_t(ctx->saved_data["epsilon"].toDouble()));
    });
    return {dx, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor unit_rows_reference(const torch::Tensor& x, double epsilon) {
  namespace F = torch::nn::functional;
  return F::normalize(x, F::NormalizeFuncOptions().dim(-1).eps(epsilon));
}

torch::Tensor unit_rows(const torch::Tensor& x, double epsilon) {
  if (!simd::fused_kernels_enabled() || !simd::cpu_floating(x) || x.dim() == 0 || x.numel() == 0)
    return unit_rows_reference(x, epsilon);
  const auto xc = x.contiguous();
  if (!records_grad(x)) return unit_rows_forward(xc, epsilon)[0];
  return UnitRows::apply(xc, epsilon);
}

}  // namespace blocklab
