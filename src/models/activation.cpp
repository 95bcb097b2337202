#include "models/activation.h"

#include <ATen/record_function.h>

#include <cmath>

#include "models/autograd.h"
#include "util/activation_math.h"

namespace blocklab {

namespace {

using namespace simd;

// Forward reads x and bias and writes y and, when training, the activation's slope at h = x + b
// (backward then multiplies by it: the erf and the exponential are computed once per element, not
// twice). Backward reads dy and the slope and writes dx and the bias gradient.
template <typename T>
struct ActivationRows {
  const T *x, *bias, *dy;
  T *y, *slope, *dx, *dbias;
  int64_t features;
};

// Elements [j, j + count) of a row, count <= the lanes of V: whole vectors directly, the row's
// tail through a zero-padded vector (so every element takes the same arithmetic).
template <typename V, typename T>
BLOCKLAB_INLINE V load_part(const T* p, int64_t count) {
  if (count == kLanesOf<T, V>) return load_as<V>(p);
  V v{};
  for (int64_t l = 0; l < count; ++l) v[l] = p[l];
  return v;
}
template <typename V, typename T>
BLOCKLAB_INLINE void store_part(T* p, const V& v, int64_t count) {
  if (count == kLanesOf<T, V>) return store_as(p, v);
  for (int64_t l = 0; l < count; ++l) p[l] = v[l];
}

// Every chunk of a row of `features`: op(j, count) for whole vectors (count = lanes, a compile-time
// constant the compiler sees), then the tail.
template <int64_t Lanes, typename Op>
BLOCKLAB_INLINE void chunks(int64_t features, Op op) {
  int64_t j = 0;
  for (; j + Lanes <= features; j += Lanes) op(j, Lanes);
  if (j < features) op(j, features - j);
}

// Forward of rows [begin, end): y = f(h), h = x + b, and if asked the slope f'(h), in vectors V of T.
template <Activation A, typename T, typename V>
BLOCKLAB_INLINE void activation_rows(const ActivationRows<T>& r, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i)
    chunks<kLanesOf<T, V>>(r.features, [&](int64_t j, int64_t count) __attribute__((always_inline)) {
      const int64_t at = i * r.features + j;
      const V h = load_part<V>(r.x + at, count) + load_part<V>(r.bias + j, count);
      V y, slope;
      value_and_slope<A>(h, y, slope);
      store_part(r.y + at, y, count);
      if (r.slope) store_part(r.slope + at, slope, count);
    });
}
template <typename T, typename V>
BLOCKLAB_INLINE void activation_rows(Activation a, const ActivationRows<T>& r, int64_t begin, int64_t end) {
  if (a == Activation::Gelu)
    activation_rows<Activation::Gelu, T, V>(r, begin, end);
  else
    activation_rows<Activation::Silu, T, V>(r, begin, end);
}

// Backward of every row, in order: dx = dy slope, db = sum over rows of dx (any activation).
template <typename T, typename V>
BLOCKLAB_INLINE void activation_rows_backward(const ActivationRows<T>& r, int64_t rows) {
  for (int64_t i = 0; i < rows; ++i)
    chunks<kLanesOf<T, V>>(r.features, [&](int64_t j, int64_t count) __attribute__((always_inline)) {
      const int64_t at = i * r.features + j;
      const V g = load_part<V>(r.dy + at, count) * load_part<V>(r.slope + at, count);
      store_part(r.dx + at, g, count);
      store_part(r.dbias + j, load_part<V>(r.dbias + j, count) + g, count);
    });
}

// float32 with AVX-512 runs 16 lanes at a time (0.77 -> 0.53 ms for a [2176, 256] GELU forward in
// a microbenchmark); the clones below keep Vec's 8.
__attribute__((target("arch=x86-64-v4"))) void activation_f32_wide(Activation a, const ActivationRows<float>& r,
                                                                   int64_t b, int64_t e) {
  activation_rows<float, Floats16>(a, r, b, e);
}
__attribute__((target("arch=x86-64-v4"))) void activation_backward_f32_wide(const ActivationRows<float>& r, int64_t rows) {
  activation_rows_backward<float, Floats16>(r, rows);
}
BLOCKLAB_ISAS void activation_f32(Activation a, const ActivationRows<float>& r, int64_t b, int64_t e) {
  activation_rows<float, Vec<float>>(a, r, b, e);
}
BLOCKLAB_ISAS void activation_f64(Activation a, const ActivationRows<double>& r, int64_t b, int64_t e) {
  activation_rows<double, Vec<double>>(a, r, b, e);
}
BLOCKLAB_ISAS void activation_backward_f32(const ActivationRows<float>& r, int64_t rows) {
  activation_rows_backward<float, Vec<float>>(r, rows);
}
BLOCKLAB_ISAS void activation_backward_f64(const ActivationRows<double>& r, int64_t rows) {
  activation_rows_backward<double, Vec<double>>(r, rows);
}
void run_activation(Activation a, const ActivationRows<float>& r, int64_t b, int64_t e) {
  wide_vectors() ? activation_f32_wide(a, r, b, e) : activation_f32(a, r, b, e);
}
void run_activation(Activation a, const ActivationRows<double>& r, int64_t b, int64_t e) { activation_f64(a, r, b, e); }
void run_activation_backward(const ActivationRows<float>& r, int64_t rows) {
  wide_vectors() ? activation_backward_f32_wide(r, rows) : activation_backward_f32(r, rows);
}
void run_activation_backward(const ActivationRows<double>& r, int64_t rows) { activation_backward_f64(r, rows); }

// The profiler's op names.
const char* op_name(Activation a) { return a == Activation::Gelu ? "blocklab::bias_gelu" : "blocklab::bias_silu"; }
const char* backward_op_name(Activation a) {
  return a == Activation::Gelu ? "blocklab::bias_gelu_backward" : "blocklab::bias_silu_backward";
}

// y = f(x + bias) and, `with_slope`, f' there (else undefined).
std::pair<torch::Tensor, torch::Tensor> bias_activation_forward(Activation a, const torch::Tensor& x,
                                                                const torch::Tensor& bias, bool with_slope) {
  RECORD_FUNCTION(op_name(a), std::vector<c10::IValue>({x, bias}));
  auto y = torch::empty(x.sizes(), x.options());
  auto slope = with_slope ? torch::empty(x.sizes(), x.options()) : torch::Tensor();
  const int64_t features = x.size(-1), rows = x.numel() / std::max<int64_t>(1, features);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_activation", [&] {
    const ActivationRows<scalar_t> r{x.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), nullptr, y.data_ptr<scalar_t>(),
                               with_slope ? slope.data_ptr<scalar_t>() : nullptr, nullptr, nullptr, features};
    parallel_flushed(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, features)),
                     [&](int64_t b, int64_t e) { run_activation(a, r, b, e); });
  });
  return {y, slope};
}

class FusedBiasActivation : public torch::autograd::Function<FusedBiasActivation> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& bias,
                               Activation a) {
    auto [y, slope] = bias_activation_forward(a, x, bias, /*with_slope=*/true);
    ctx->save_for_backward({slope});  // (the same size as x, which is then not kept)
    ctx->saved_data["activation"] = int64_t(a);
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto slope = ctx->get_saved_variables()[0];
    const auto a = Activation(ctx->saved_data["activation"].toInt());
    RECORD_FUNCTION(backward_op_name(a), std::vector<c10::IValue>({slope}));
    const auto dy = grads[0].contiguous();
    auto dx = torch::empty(slope.sizes(), slope.options());
    const int64_t features = slope.size(-1), rows = slope.numel() / std::max<int64_t>(1, features);
    auto dbias = torch::zeros({features}, slope.options());
    AT_DISPATCH_FLOATING_TYPES(slope.scalar_type(), "bias_activation backward", [&] {
      const ActivationRows<scalar_t> r{nullptr, nullptr, dy.data_ptr<scalar_t>(), nullptr, slope.data_ptr<scalar_t>(),
                                 dx.data_ptr<scalar_t>(), dbias.data_ptr<scalar_t>(), features};
      const FlushSubnormals flush;
      run_activation_backward(r, rows);  // one thread: the bias gradient sums the rows in order
    });
    return {dx, dbias, torch::Tensor()};
  }
};

bool activation_fusable(const torch::Tensor& x, const torch::Tensor& bias) {
  if (!fused_kernels_enabled() || !cpu_floating(x) || !bias.device().is_cpu()) return false;
  return x.dim() >= 1 && bias.dim() == 1 && bias.size(0) == x.size(-1) && bias.scalar_type() == x.scalar_type();
}

}  // namespace

torch::Tensor bias_activation_reference(Activation a, const torch::Tensor& x, const torch::Tensor& bias) {
  return a == Activation::Gelu ? torch::gelu(x + bias) : torch::silu(x + bias);
}

torch::Tensor bias_activation(Activation a, const torch::Tensor& x, const torch::Tensor& bias) {
  if (!activation_fusable(x, bias)) return bias_activation_reference(a, x, bias);
  const auto xc = x.contiguous(), bc = bias.contiguous();
  if (!records_grad(x, bias))
    return bias_activation_forward(a, xc, bc, /*with_slope=*/false).first;
  return FusedBiasActivation::apply(xc, bc, a);
}

}  // namespace blocklab
