#include "models/modulation.h"

#include <ATen/record_function.h>

#include <cmath>
#include <vector>

#include "models/autograd.h"
#include "util/simd.h"

namespace blocklab {

namespace {

using namespace simd;

// Row (n, t) of a [N, T, D] tensor whose last dimension is contiguous; a [N, 1, D] one is the same
// row for every t (token stride 0), so a gradient accumulated into it sums over tokens.
template <typename T>
struct TokenRows {
  T* data;
  int64_t sn, st;
  T* row(int64_t n, int64_t t) const { return data + n * sn + t * st; }
};

template <typename T>
TokenRows<T> token_rows(const torch::Tensor& x) {
  if (!x.defined()) return {nullptr, 0, 0};
  return {x.data_ptr<T>(), x.stride(0), x.size(1) == 1 ? 0 : x.stride(1)};
}

enum class Pass { ModulateForward, ModulateBackward, GatedForward, GatedBackward, GatedModulateForward, GatedModulateBackward };

// Everything one pass reads and writes; a pass uses its own fields.
template <typename T>
struct Rows {
  int64_t tokens, dim;
  TokenRows<T> x, shift, scale, gate, branch, out;  // inputs and output (branch: gated_add's y)
  TokenRows<T> normed;                              // gated_add_modulate: modulate(out)
  TokenRows<T> dout, dx, dshift, dscale, dgate, dbranch;
  TokenRows<T> dnormed;                             // gated_add_modulate: the gradient of `normed`
  TokenRows<T> residual;  // the modulations' backward: a gradient of their input from its other use, added to dx
  T* mean;  // modulate's statistics per token [N, T], kept for backward
  T* rstd;
  T epsilon;
};

// sum_j f(j) over a row, vectors of lanes summed lane-wise, then the lanes, then the tail.
template <typename T, typename V, typename VecTerm, typename ScalarTerm>
BLOCKLAB_INLINE T row_sum(int64_t dim, VecTerm vec_term, ScalarTerm scalar_term) {
  V acc{};
  int64_t j = 0;
  for (; j + kLanesOf<T, V> <= dim; j += kLanesOf<T, V>) acc += vec_term(j);
  T s = lane_sum<T>(acc);
  for (; j < dim; ++j) s += scalar_term(j);
  return s;
}

// modulate forward of one row, in two steps: its statistics, mean and rstd = 1 / sqrt(variance +
// epsilon) (two passes over the row, as LayerNorm), then y = (x - mean) * rstd * (1 + scale) + shift.
template <typename T, typename V>
BLOCKLAB_INLINE void row_statistics(const T* x, int64_t dim, T epsilon, T& mean_out, T& rstd_out) {
  const T mean = row_sum<T, V>(dim, [&](int64_t j) { return load_as<V>(x + j); }, [&](int64_t j) { return x[j]; }) / T(dim);
  const T var = row_sum<T, V>(
                    dim, [&](int64_t j) { const V c = load_as<V>(x + j) - mean; return c * c; },
                    [&](int64_t j) { const T c = x[j] - mean; return c * c; }) / T(dim);
  mean_out = mean;
  rstd_out = T(1) / std::sqrt(var + epsilon);
}

template <typename T, typename V>
BLOCKLAB_INLINE void modulate_row(const T* x, const T* shift, const T* scale, T* y, int64_t dim, T mean, T rstd) {
  int64_t j = 0;
  for (; j + kLanesOf<T, V> <= dim; j += kLanesOf<T, V>)
    store_as(y + j, (load_as<V>(x + j) - mean) * rstd * (T(1) + load_as<V>(scale + j)) + load_as<V>(shift + j));
  for (; j < dim; ++j) y[j] = (x[j] - mean) * rstd * (T(1) + scale[j]) + shift[j];
}

// modulate backward of one row, with xh = (x - mean) * rstd and g = dy * (1 + scale), in two steps:
//   dshift += dy;  dscale += dy * xh;  and the row's means of g and g * xh;
//   dx = rstd * (g - mean(g) - xh * mean(g * xh)) (+ dres: a gradient of x from its other use, when given).
template <typename T, typename V>
BLOCKLAB_INLINE void modulate_row_sums(const T* x, const T* scale, const T* dy, T* dshift, T* dscale, int64_t dim,
                                       T mean, T rstd, T& g_mean_out, T& gx_mean_out) {
  V sum_g{}, sum_gx{};
  int64_t j = 0;
  for (; j + kLanesOf<T, V> <= dim; j += kLanesOf<T, V>) {
    const V d = load_as<V>(dy + j), xh = (load_as<V>(x + j) - mean) * rstd, g = d * (T(1) + load_as<V>(scale + j));
    sum_g += g;
    sum_gx += g * xh;
    store_as(dshift + j, load_as<V>(dshift + j) + d);
    store_as(dscale + j, load_as<V>(dscale + j) + d * xh);
  }
  T g_mean = lane_sum<T>(sum_g), gx_mean = lane_sum<T>(sum_gx);
  for (int64_t i = j; i < dim; ++i) {
    const T xh = (x[i] - mean) * rstd, g = dy[i] * (T(1) + scale[i]);
    g_mean += g;
    gx_mean += g * xh;
    dshift[i] += dy[i];
    dscale[i] += dy[i] * xh;
  }
  g_mean_out = g_mean / T(dim);
  gx_mean_out = gx_mean / T(dim);
}

template <typename T, typename V>
BLOCKLAB_INLINE void modulate_row_dx(const T* x, const T* scale, const T* dy, const T* dres, T* dx, int64_t dim, T mean,
                                     T rstd, T g_mean, T gx_mean) {
  int64_t j = 0;
  for (; j + kLanesOf<T, V> <= dim; j += kLanesOf<T, V>) {
    const V xh = (load_as<V>(x + j) - mean) * rstd, g = load_as<V>(dy + j) * (T(1) + load_as<V>(scale + j));
    const V d = rstd * (g - g_mean - xh * gx_mean);
    store_as(dx + j, dres ? d + load_as<V>(dres + j) : d);
  }
  for (; j < dim; ++j) {
    const T xh = (x[j] - mean) * rstd, g = dy[j] * (T(1) + scale[j]);
    const T d = rstd * (g - g_mean - xh * gx_mean);
    dx[j] = dres ? d + dres[j] : d;
  }
}

// gated_add of one row: out = x + gate * y.
template <typename T, typename V>
BLOCKLAB_INLINE void gated_row(const T* x, const T* gate, const T* y, T* out, int64_t dim) {
  int64_t j = 0;
  for (; j + kLanesOf<T, V> <= dim; j += kLanesOf<T, V>) store_as(out + j, load_as<V>(x + j) + load_as<V>(gate + j) * load_as<V>(y + j));
  for (; j < dim; ++j) out[j] = x[j] + gate[j] * y[j];
}

// Its backward: dy = dout * gate, dgate += dout * y (dx is dout itself).
template <typename T, typename V>
BLOCKLAB_INLINE void gated_row_backward(const T* dout, const T* gate, const T* y, T* dgate, T* dy, int64_t dim) {
  int64_t j = 0;
  for (; j + kLanesOf<T, V> <= dim; j += kLanesOf<T, V>) {
    const V d = load_as<V>(dout + j);
    store_as(dy + j, d * load_as<V>(gate + j));
    store_as(dgate + j, load_as<V>(dgate + j) + d * load_as<V>(y + j));
  }
  for (; j < dim; ++j) {
    dy[j] = dout[j] * gate[j];
    dgate[j] += dout[j] * y[j];
  }
}

// One sample of a pass, its tokens in order (so that a per-sample gradient sums them in order).
// The modulations run in two loops over the sample's tokens: each token's statistics (its row
// sums, a square root and a division: a chain of dependent steps), then the element-wise
// outputs that need them; token by token, each output waited on its own token's chain.
// gated_add_modulate runs both steps on the sample while its rows are in cache: forward
// h = x + gate * y, then modulate(h); backward the modulation's gradient of h plus the gradient h
// receives from its other use (dout), which is then gated_add's dout. `sums` is scratch for two
// values per token.
template <typename T, typename V>
BLOCKLAB_INLINE void sample(Pass pass, const Rows<T>& r, int64_t n, T* sums) {
  const int64_t dim = r.dim, tokens = r.tokens;
  T *mean = r.mean ? r.mean + n * tokens : nullptr, *rstd = r.rstd ? r.rstd + n * tokens : nullptr;  // (the modulations')
  switch (pass) {
    case Pass::GatedForward:
      for (int64_t t = 0; t < tokens; ++t)
        gated_row<T, V>(r.x.row(n, t), r.gate.row(n, t), r.branch.row(n, t), r.out.row(n, t), dim);
      return;
    case Pass::GatedBackward:
      for (int64_t t = 0; t < tokens; ++t)
        gated_row_backward<T, V>(r.dout.row(n, t), r.gate.row(n, t), r.branch.row(n, t), r.dgate.row(n, t),
                                 r.dbranch.row(n, t), dim);
      return;
    case Pass::ModulateForward:
    case Pass::GatedModulateForward: {
      const bool gated = pass == Pass::GatedModulateForward;
      const TokenRows<T>& in = gated ? r.out : r.x;
      const TokenRows<T>& out = gated ? r.normed : r.out;
      for (int64_t t = 0; t < tokens; ++t) {
        if (gated) gated_row<T, V>(r.x.row(n, t), r.gate.row(n, t), r.branch.row(n, t), r.out.row(n, t), dim);
        row_statistics<T, V>(in.row(n, t), dim, r.epsilon, mean[t], rstd[t]);
      }
      for (int64_t t = 0; t < tokens; ++t)
        modulate_row<T, V>(in.row(n, t), r.shift.row(n, t), r.scale.row(n, t), out.row(n, t), dim, mean[t], rstd[t]);
      return;
    }
    case Pass::ModulateBackward:
    case Pass::GatedModulateBackward: {
      const bool gated = pass == Pass::GatedModulateBackward;
      const TokenRows<T>& in = gated ? r.out : r.x;
      const TokenRows<T>& dy = gated ? r.dnormed : r.dout;
      const auto residual = [&](int64_t t) { return r.residual.data ? r.residual.row(n, t) : nullptr; };
      for (int64_t t = 0; t < tokens; ++t)
        modulate_row_sums<T, V>(in.row(n, t), r.scale.row(n, t), dy.row(n, t), r.dshift.row(n, t), r.dscale.row(n, t),
                                dim, mean[t], rstd[t], sums[2 * t], sums[2 * t + 1]);
      for (int64_t t = 0; t < tokens; ++t) {
        modulate_row_dx<T, V>(in.row(n, t), r.scale.row(n, t), dy.row(n, t), residual(t), r.dx.row(n, t), dim, mean[t],
                              rstd[t], sums[2 * t], sums[2 * t + 1]);
        if (gated)
          gated_row_backward<T, V>(r.dx.row(n, t), r.gate.row(n, t), r.branch.row(n, t), r.dgate.row(n, t),
                                   r.dbranch.row(n, t), dim);
      }
      return;
    }
  }
}

// Samples [begin, end).
template <typename T, typename V>
BLOCKLAB_INLINE void samples(Pass pass, const Rows<T>& r, int64_t begin, int64_t end) {
  const bool backward = pass == Pass::ModulateBackward || pass == Pass::GatedModulateBackward;
  std::vector<T> sums(backward ? size_t(2 * r.tokens) : 0);  // (the backward modulations' scratch)
  for (int64_t n = begin; n < end; ++n) sample<T, V>(pass, r, n, sums.data());
}

// float32 with AVX-512 in 16 lanes (a ViT row of 64 is then four vectors), the clones in Vec's.
__attribute__((target("arch=x86-64-v4"))) void run_samples_f32_wide(Pass pass, const Rows<float>& r, int64_t b,
                                                                    int64_t e) {
  samples<float, Floats16>(pass, r, b, e);
}
BLOCKLAB_ISAS void run_samples_f32(Pass pass, const Rows<float>& r, int64_t b, int64_t e) {
  samples<float, Vec<float>>(pass, r, b, e);
}
BLOCKLAB_ISAS void run_samples_f64(Pass pass, const Rows<double>& r, int64_t b, int64_t e) {
  samples<double, Vec<double>>(pass, r, b, e);
}
void run_samples(Pass pass, const Rows<float>& r, int64_t b, int64_t e) {
  wide_vectors() ? run_samples_f32_wide(pass, r, b, e) : run_samples_f32(pass, r, b, e);
}
void run_samples(Pass pass, const Rows<double>& r, int64_t b, int64_t e) { run_samples_f64(pass, r, b, e); }

// Runs `pass` over all samples of x [N, T, D] in parallel, `fill` setting the pass's fields.
template <typename Fill>
void run_pass(Pass pass, const torch::Tensor& x, Fill fill) {
  const int64_t n = x.size(0), tokens = x.size(1), dim = x.size(2);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "modulation", [&] {
    Rows<scalar_t> r{};
    r.tokens = tokens;
    r.dim = dim;
    fill(r);
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, tokens * dim));
    parallel_flushed(0, n, grain, [&](int64_t b, int64_t e) { run_samples(pass, r, b, e); });
  });
}

torch::Tensor last_dim_dense(const torch::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

// A fresh [N, T, D] tensor of x's type, contiguous.
torch::Tensor empty_rows(const torch::Tensor& x) { return torch::empty(x.sizes(), x.options()); }

}  // namespace

namespace fused {

bool modulation_fusable(const torch::Tensor& x, const std::initializer_list<const torch::Tensor*>& others) {
  if (!fused_kernels_enabled() || !cpu_floating(x) || x.dim() != 3) return false;
  for (const auto* o : others)
    if (o->dim() != 3 || o->scalar_type() != x.scalar_type() || !o->device().is_cpu() || o->size(0) != x.size(0) ||
        (o->size(1) != 1 && o->size(1) != x.size(1)) || o->size(2) != x.size(2))
      return false;
  return true;
}

std::array<torch::Tensor, 3> modulate_forward(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  RECORD_FUNCTION("blocklab::modulate", std::vector<c10::IValue>({x, scale}));
  auto y = empty_rows(x);
  auto mean = torch::empty({x.size(0), x.size(1)}, x.options()), rstd = torch::empty_like(mean);
  run_pass(Pass::ModulateForward, x, [&](auto& r) {
    using T = std::remove_pointer_t<decltype(r.mean)>;
    r.x = token_rows<T>(x), r.shift = token_rows<T>(shift), r.scale = token_rows<T>(scale), r.out = token_rows<T>(y);
    r.mean = mean.data_ptr<T>(), r.rstd = rstd.data_ptr<T>(), r.epsilon = T(kNormEpsilon);
  });
  return {y, mean, rstd};
}

torch::Tensor gated_add_forward(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y) {
  RECORD_FUNCTION("blocklab::gated_add", std::vector<c10::IValue>({x, gate}));
  auto out = empty_rows(x);
  run_pass(Pass::GatedForward, x, [&](auto& r) {
    using T = std::remove_pointer_t<decltype(r.mean)>;
    r.x = token_rows<T>(x), r.gate = token_rows<T>(gate), r.branch = token_rows<T>(y), r.out = token_rows<T>(out);
  });
  return out;
}

std::array<torch::Tensor, 4> gated_add_modulate_forward(const torch::Tensor& x, const torch::Tensor& gate,
                                                        const torch::Tensor& y, const torch::Tensor& shift,
                                                        const torch::Tensor& scale) {
  RECORD_FUNCTION("blocklab::gated_add_modulate", std::vector<c10::IValue>({x, gate}));
  auto h = empty_rows(x), normed = empty_rows(x);
  auto mean = torch::empty({x.size(0), x.size(1)}, x.options()), rstd = torch::empty_like(mean);
  run_pass(Pass::GatedModulateForward, x, [&](auto& r) {
    using T = std::remove_pointer_t<decltype(r.mean)>;
    r.x = token_rows<T>(x), r.gate = token_rows<T>(gate), r.branch = token_rows<T>(y), r.out = token_rows<T>(h);
    r.shift = token_rows<T>(shift), r.scale = token_rows<T>(scale), r.normed = token_rows<T>(normed);
    r.mean = mean.data_ptr<T>(), r.rstd = rstd.data_ptr<T>(), r.epsilon = T(kNormEpsilon);
  });
  return {h, normed, mean, rstd};
}

void modulate_backward(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& mean,
                       const torch::Tensor& rstd, const torch::Tensor& dout, const torch::Tensor& dres,
                       const torch::Tensor& dx, const torch::Tensor& dshift, const torch::Tensor& dscale) {
  RECORD_FUNCTION("blocklab::modulate_backward", std::vector<c10::IValue>({x, scale}));
  run_pass(Pass::ModulateBackward, x, [&](auto& r) {
    using T = std::remove_pointer_t<decltype(r.mean)>;
    r.x = token_rows<T>(x), r.scale = token_rows<T>(scale), r.dout = token_rows<T>(dout), r.dx = token_rows<T>(dx);
    r.dshift = token_rows<T>(dshift), r.dscale = token_rows<T>(dscale), r.residual = token_rows<T>(dres);
    r.mean = mean.data_ptr<T>(), r.rstd = rstd.data_ptr<T>();
  });
}

void gated_add_backward(const torch::Tensor& gate, const torch::Tensor& y, const torch::Tensor& dout,
                        const torch::Tensor& dgate, const torch::Tensor& dy) {
  RECORD_FUNCTION("blocklab::gated_add_backward", std::vector<c10::IValue>({y, gate}));
  run_pass(Pass::GatedBackward, y, [&](auto& r) {
    using T = std::remove_pointer_t<decltype(r.mean)>;
    r.gate = token_rows<T>(gate), r.branch = token_rows<T>(y), r.dout = token_rows<T>(dout);
    r.dgate = token_rows<T>(dgate), r.dbranch = token_rows<T>(dy);
  });
}

void gated_add_modulate_backward(const torch::Tensor& h, const torch::Tensor& gate, const torch::Tensor& y,
                                 const torch::Tensor& scale, const torch::Tensor& mean, const torch::Tensor& rstd,
                                 const torch::Tensor& dh, const torch::Tensor& dnormed, const torch::Tensor& dx,
                                 const torch::Tensor& dgate, const torch::Tensor& dy, const torch::Tensor& dshift,
                                 const torch::Tensor& dscale) {
  RECORD_FUNCTION("blocklab::gated_add_modulate_backward", std::vector<c10::IValue>({h, gate}));
  run_pass(Pass::GatedModulateBackward, h, [&](auto& r) {
    using T = std::remove_pointer_t<decltype(r.mean)>;
    r.out = token_rows<T>(h), r.scale = token_rows<T>(scale), r.dnormed = token_rows<T>(dnormed);
    r.residual = token_rows<T>(dh), r.dx = token_rows<T>(dx), r.dshift = token_rows<T>(dshift);
    r.dscale = token_rows<T>(dscale), r.gate = token_rows<T>(gate), r.branch = token_rows<T>(y);
    r.dgate = token_rows<T>(dgate), r.dbranch = token_rows<T>(dy);
    r.mean = mean.data_ptr<T>(), r.rstd = rstd.data_ptr<T>();
  });
}

}  // namespace fused

namespace {

using namespace fused;

class FusedModulate : public torch::autograd::Function<FusedModulate> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& shift,
                               const torch::Tensor& scale) {
    auto [y, mean, rstd] = modulate_forward(x, shift, scale);
    ctx->save_for_backward({x, scale, mean, rstd});
    ctx->saved_data["shift_tokens"] = shift.size(1);
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &scale = saved[1], &mean = saved[2], &rstd = saved[3];
    auto dx = empty_rows(x);
    auto dshift = torch::zeros({x.size(0), ctx->saved_data["shift_tokens"].toInt(), x.size(2)}, x.options());
    auto dscale = torch::zeros(scale.sizes(), x.options());
    modulate_backward(x, scale, mean, rstd, last_dim_dense(grads[0]), {}, dx, dshift, dscale);
    return {dx, dshift, dscale};
  }
};

class FusedGatedAdd : public torch::autograd::Function<FusedGatedAdd> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& gate,
                               const torch::Tensor& y) {
    ctx->save_for_backward({gate, y});
    return gated_add_forward(x, gate, y);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &gate = saved[0], &y = saved[1];
    auto dy = empty_rows(y);
    auto dgate = torch::zeros(gate.sizes(), gate.options());
    gated_add_backward(gate, y, last_dim_dense(grads[0]), dgate, dy);
    return {grads[0], dgate, dy};
  }
};

// Backward receives the gradients of both outputs: h's from its other use (the layer's last
// residual add) and modulate(h)'s; their sum is the gradient of h, summed in the same pass.
class FusedGatedModulate : public torch::autograd::Function<FusedGatedModulate> {
 public:
  static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                                              const torch::Tensor& gate, const torch::Tensor& y,
                                              const torch::Tensor& shift, const torch::Tensor& scale) {
    auto [h, normed, mean, rstd] = gated_add_modulate_forward(x, gate, y, shift, scale);
    ctx->save_for_backward({h, gate, y, scale, mean, rstd});
    ctx->saved_data["shift_tokens"] = shift.size(1);
    return {h, normed};
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &gate = saved[1], &y = saved[2], &scale = saved[3], &mean = saved[4], &rstd = saved[5];
    const auto dh = grads[0].defined() ? last_dim_dense(grads[0]) : torch::Tensor();  // (undefined: zero)
    const auto dnormed = grads[1].defined() ? last_dim_dense(grads[1]) : torch::zeros_like(h);
    auto dx = empty_rows(h), dy = empty_rows(y);
    auto dgate = torch::zeros(gate.sizes(), h.options());
    auto dshift = torch::zeros({h.size(0), ctx->saved_data["shift_tokens"].toInt(), h.size(2)}, h.options());
    auto dscale = torch::zeros(scale.sizes(), h.options());
    gated_add_modulate_backward(h, gate, y, scale, mean, rstd, dh, dnormed, dx, dgate, dy, dshift, dscale);
    return {dx, dgate, dy, dshift, dscale};
  }
};

}  // namespace

torch::Tensor modulate_reference(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  namespace F = torch::nn::functional;
  return F::layer_norm(x, F::LayerNormFuncOptions({x.size(-1)}).eps(kNormEpsilon)) * (1 + scale) + shift;
}

torch::Tensor gated_add_reference(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y) {
  return x + gate * y;
}

torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  if (!modulation_fusable(x, {&shift, &scale})) return modulate_reference(x, shift, scale);
  const auto xc = last_dim_dense(x), shc = last_dim_dense(shift), scc = last_dim_dense(scale);
  if (!records_grad(x, shift, scale)) return fused::modulate_forward(xc, shc, scc)[0];
  return FusedModulate::apply(xc, shc, scc);
}

torch::Tensor gated_add(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y) {
  if (!modulation_fusable(x, {&gate, &y}) || y.size(1) != x.size(1)) return gated_add_reference(x, gate, y);
  const auto xc = last_dim_dense(x), gc = last_dim_dense(gate), yc = last_dim_dense(y);
  if (!records_grad(x, gate, y)) return fused::gated_add_forward(xc, gc, yc);
  return FusedGatedAdd::apply(xc, gc, yc);
}

std::array<torch::Tensor, 2> gated_add_modulate(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y,
                                                const torch::Tensor& shift, const torch::Tensor& scale) {
  if (!modulation_fusable(x, {&gate, &y, &shift, &scale}) || y.size(1) != x.size(1)) {
    const auto h = gated_add_reference(x, gate, y);
    return {h, modulate_reference(h, shift, scale)};
  }
  const auto xc = last_dim_dense(x), gc = last_dim_dense(gate), yc = last_dim_dense(y);
  const auto shc = last_dim_dense(shift), scc = last_dim_dense(scale);
  if (!records_grad(x, gate, y, shift, scale)) {
    const auto f = fused::gated_add_modulate_forward(xc, gc, yc, shc, scc);
    return {f[0], f[1]};
  }
  const auto out = FusedGatedModulate::apply(xc, gc, yc, shc, scc);
  return {out[0], out[1]};
}

}  // namespace blocklab
