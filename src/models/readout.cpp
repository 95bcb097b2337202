#include "models/readout.h"

#include <ATen/record_function.h>

#include <cmath>

#include "models/autograd.h"
#include "util/simd.h"

namespace blocklab {

namespace {

// Everything a pass reads, as raw rows: sample r's token 0 is x + r * x_stride; shift and scale
// are the two halves of row r of shift_scale; c_out and c_skip are null without the skip.
template <typename T>
struct ReadoutRows {
  int64_t n, d, x_stride;
  const T *w, *b, *shift_scale, *c_out, *c_skip, *z;
};

// The sum of term(j) over j < n in eight interleaved partial sums: independent chains, which the
// compiler puts in vector lanes (one chain of n dependent additions took most of the readout's time).
template <typename T, typename Term>
T sum_of(int64_t n, const Term& term) {
  T part[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int64_t l = 0; l < 8; ++l) part[l] += term(j + l);
  T sum = 0;
  for (; j < n; ++j) sum += term(j);
  for (int64_t l = 0; l < 8; ++l) sum += part[l];
  return sum;
}

// u = d (1 + scale) + shift with d = c_out h + c_skip z (or h), h = LN(x) w + b. Keeps the
// normalized x (xhat), d and 1 / std, which backward needs.
template <typename T>
void forward_rows(const ReadoutRows<T>& r, const T* x, T eps, T* u, T* xhat, T* d_out, T* rstd) {
  const int64_t d = r.d;
  for (int64_t i = 0; i < r.n; ++i, x += r.x_stride, u += d, xhat += d, d_out += d) {
    const T mean = sum_of<T>(d, [&](int64_t j) { return x[j]; }) / T(d);
    const T squares = sum_of<T>(d, [&](int64_t j) { return (x[j] - mean) * (x[j] - mean); });
    rstd[i] = T(1) / std::sqrt(squares / T(d) + eps);  // the biased variance, as LayerNorm's
    const T* shift = r.shift_scale + i * 2 * d;
    const T* scale = shift + d;
    for (int64_t j = 0; j < d; ++j) {
      xhat[j] = (x[j] - mean) * rstd[i];
      const T h = xhat[j] * r.w[j] + r.b[j];
      d_out[j] = r.c_out ? r.c_out[i] * h + r.c_skip[i] * r.z[i * d + j] : h;
      u[j] = d_out[j] * (1 + scale[j]) + shift[j];
    }
  }
}

// From du: d(shift) = du, d(scale) = du d, dd = du (1 + scale); dz = dd c_skip, dh = dd c_out (or
// dd); the norm's dw += dh xhat, db += dh; and LayerNorm's input gradient from g = dh w,
// dx = rstd (g - mean(g) - xhat mean(g xhat)), written into token 0 of dx's sample.
template <typename T>
void backward_rows(const ReadoutRows<T>& r, const T* du, const T* xhat, const T* d_saved, const T* rstd, T* dx, T* dw, T* db,
                   T* d_shift_scale, T* dz) {
  const int64_t d = r.d;
  std::vector<T> g_row(static_cast<size_t>(d));
  T* g = g_row.data();
  for (int64_t j = 0; j < d; ++j) dw[j] = db[j] = 0;
  for (int64_t i = 0; i < r.n; ++i, du += d, xhat += d, d_saved += d, dx += r.x_stride) {
    const T* scale = r.shift_scale + i * 2 * d + d;
    T* d_shift = d_shift_scale + i * 2 * d;
    T* d_scale = d_shift + d;
    for (int64_t j = 0; j < d; ++j) {
      d_shift[j] = du[j];
      d_scale[j] = du[j] * d_saved[j];
      const T dd = du[j] * (1 + scale[j]);
      if (dz) dz[i * d + j] = dd * r.c_skip[i];
      const T dh = r.c_out ? dd * r.c_out[i] : dd;
      dw[j] += dh * xhat[j];
      db[j] += dh;
      g[j] = dh * r.w[j];
    }
    const T g_mean = sum_of<T>(d, [&](int64_t j) { return g[j]; }) / T(d);
    const T g_xhat_mean = sum_of<T>(d, [&](int64_t j) { return g[j] * xhat[j]; }) / T(d);
    for (int64_t j = 0; j < d; ++j) dx[j] = rstd[i] * (g[j] - g_mean - xhat[j] * g_xhat_mean);
  }
}

// x's shape [N, T, d]; b and z may be undefined (backward reads neither), and c_out empty (no skip).
template <typename T>
ReadoutRows<T> rows_of(torch::IntArrayRef shape, const torch::Tensor& w, const torch::Tensor& b,
                       const torch::Tensor& shift_scale, const torch::Tensor& c_out, const torch::Tensor& c_skip,
                       const torch::Tensor& z) {
  const auto pointer = [](const torch::Tensor& t) { return t.defined() && t.numel() > 0 ? t.data_ptr<T>() : nullptr; };
  return {shape[0], shape[2], shape[1] * shape[2], pointer(w), pointer(b), pointer(shift_scale),
          pointer(c_out), pointer(c_skip), pointer(z)};
}

// Inputs: x [N, T, d], w, b [d], shift_scale [N, 2 d], c_out, c_skip [N], z [N, d], all
// contiguous; without the skip the last three are empty.
class Readout : public torch::autograd::Function<Readout> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& b, const torch::Tensor& shift_scale, const torch::Tensor& c_out,
                               const torch::Tensor& c_skip, const torch::Tensor& z, double eps) {
    RECORD_FUNCTION("blocklab::readout", std::vector<c10::IValue>({x, shift_scale}));
    const int64_t n = x.size(0), d = x.size(2);
    auto u = torch::empty({n, d}, x.options()), xhat = torch::empty_like(u), d_out = torch::empty_like(u);
    auto rstd = torch::empty({n}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "readout", [&] {
      forward_rows<scalar_t>(rows_of<scalar_t>(x.sizes(), w, b, shift_scale, c_out, c_skip, z), x.data_ptr<scalar_t>(),
                             scalar_t(eps), u.data_ptr<scalar_t>(), xhat.data_ptr<scalar_t>(),
                             d_out.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({w, shift_scale, c_out, c_skip, xhat, d_out, rstd});
    ctx->saved_data["shape"] = x.sizes();
    return u;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &w = s[0], &shift_scale = s[1], &c_out = s[2], &c_skip = s[3], &xhat = s[4], &d_saved = s[5],
               &rstd = s[6];
    const auto du = grads[0].contiguous();
    RECORD_FUNCTION("blocklab::readout_backward", std::vector<c10::IValue>({du}));
    const bool skip = c_out.numel() > 0;
    auto dx = torch::zeros(ctx->saved_data["shape"].toIntVector(), du.options());
    auto dw = torch::empty_like(w), db = torch::empty_like(w), d_shift_scale = torch::empty_like(shift_scale);
    auto dz = skip ? torch::empty_like(du) : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(du.scalar_type(), "readout backward", [&] {
      backward_rows<scalar_t>(rows_of<scalar_t>(dx.sizes(), w, {}, shift_scale, c_out, c_skip, {}),
                              du.data_ptr<scalar_t>(), xhat.data_ptr<scalar_t>(), d_saved.data_ptr<scalar_t>(),
                              rstd.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), dw.data_ptr<scalar_t>(),
                              db.data_ptr<scalar_t>(), d_shift_scale.data_ptr<scalar_t>(),
                              skip ? dz.data_ptr<scalar_t>() : nullptr);
    });
    return {dx, dw, db, d_shift_scale, torch::Tensor(), torch::Tensor(), dz, torch::Tensor()};
  }
};

bool fusable(const torch::Tensor& x, const torch::nn::LayerNorm& norm, const torch::Tensor& shift_scale,
             const ReadoutSkip& skip) {
  const auto& w = norm->weight;
  const auto same = [&](const torch::Tensor& t) {
    return t.defined() && t.scalar_type() == x.scalar_type() && t.device() == x.device();
  };
  if (!simd::fused_kernels_enabled() || !simd::cpu_floating(x) || x.dim() != 3 || x.size(1) == 0 ||
      !same(w) || !same(norm->bias) || !same(shift_scale) || w.dim() != 1 || w.size(0) != x.size(2) ||
      norm->options.normalized_shape() != std::vector<int64_t>{x.size(2)} ||
      shift_scale.sizes() != torch::IntArrayRef{x.size(0), 2 * x.size(2)})
    return false;
  if (!skip.c_out.defined()) return true;
  // (c_out and c_skip are the noise level's constants: no gradient reaches them here)
  const auto per_sample = [&](const torch::Tensor& c) {
    return same(c) && !c.requires_grad() && c.dim() == 1 && c.size(0) == x.size(0);
  };
  return per_sample(skip.c_out) && per_sample(skip.c_skip) && same(skip.z) &&
         skip.z.sizes() == torch::IntArrayRef{x.size(0), x.size(2)};
}

}  // namespace

torch::Tensor first_token_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm) {
  return norm.ptr()->forward(x.select(1, 0));  // LayerNorm is per token: norm token 0 only
}

torch::Tensor readout_reference(const torch::Tensor& x, const torch::nn::LayerNorm& norm,
                                const torch::Tensor& shift_scale, const ReadoutSkip& skip) {
  auto d = first_token_norm(x, norm);
  if (skip.c_out.defined()) d = skip.c_out.unsqueeze(1) * d + skip.c_skip.unsqueeze(1) * skip.z;
  const int64_t width = x.size(2);
  return d * (1 + shift_scale.narrow(-1, width, width)) + shift_scale.narrow(-1, 0, width);
}

torch::Tensor readout(const torch::Tensor& x, const torch::nn::LayerNorm& norm, const torch::Tensor& shift_scale,
                      const ReadoutSkip& skip) {
  if (!fusable(x, norm, shift_scale, skip)) return readout_reference(x, norm, shift_scale, skip);
  const auto empty = torch::empty({0}, x.options());
  const bool has_skip = skip.c_out.defined();
  const double eps = norm->options.eps();
  return Readout::apply(x.contiguous(), norm->weight.contiguous(), norm->bias.contiguous(), shift_scale.contiguous(),
                        has_skip ? skip.c_out.contiguous() : empty, has_skip ? skip.c_skip.contiguous() : empty,
                        has_skip ? skip.z.contiguous() : empty, eps);
}

}  // namespace blocklab
