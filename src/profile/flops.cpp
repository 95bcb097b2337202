#include "profile/flops.h"

#include <algorithm>
#include <functional>
#include <numeric>
#include <unordered_map>

#include <fmt/format.h>

namespace blocklab {
namespace {

using Inputs = std::vector<OpInput>;

const std::vector<int64_t>* tensor_at(const Inputs& in, size_t i) {
  return i < in.size() && in[i].kind == OpInput::Kind::Tensor ? &in[i].v : nullptr;
}

int64_t product(const std::vector<int64_t>& v, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to && i < v.size(); ++i) p *= v[i];
  return p;
}

// [M,K] x [K,N]
int64_t mm(const Inputs& in, size_t a_at, size_t b_at) {
  const auto *a = tensor_at(in, a_at), *b = tensor_at(in, b_at);
  if (!a || !b || a->size() != 2 || b->size() != 2) return 0;
  return 2 * (*a)[0] * (*a)[1] * (*b)[1];
}

// [B,M,K] x [B,K,N]
int64_t bmm(const Inputs& in, size_t a_at, size_t b_at) {
  const auto *a = tensor_at(in, a_at), *b = tensor_at(in, b_at);
  if (!a || !b || a->size() != 3 || b->size() != 3) return 0;
  return 2 * (*a)[0] * (*a)[1] * (*a)[2] * (*b)[2];
}

// torch.matmul semantics: 1-D operands are promoted, batch dimensions broadcast.
int64_t matmul(const Inputs& in) {
  const auto *a = tensor_at(in, 0), *b = tensor_at(in, 1);
  if (!a || !b || a->empty() || b->empty()) return 0;
  std::vector<int64_t> x = *a, y = *b;
  if (x.size() == 1) x.insert(x.begin(), 1);  // [K] -> [1,K]
  if (y.size() == 1) y.push_back(1);          // [K] -> [K,1]
  const int64_t m = x[x.size() - 2], k = x.back(), n = y.back();
  // broadcast batch dims
  const size_t bx = x.size() - 2, by = y.size() - 2, nb = std::max(bx, by);
  int64_t batch = 1;
  for (size_t i = 0; i < nb; ++i) {
    const int64_t dx = i < nb - bx ? 1 : x[i - (nb - bx)];
    const int64_t dy = i < nb - by ? 1 : y[i - (nb - by)];
    batch *= std::max(dx, dy);
  }
  return 2 * batch * m * k * n;
}

// linear(input [..., in], weight [out, in], bias)
int64_t linear(const Inputs& in) {
  const auto *x = tensor_at(in, 0), *w = tensor_at(in, 1);
  if (!x || !w || x->empty() || w->size() != 2) return 0;
  return 2 * product(*x, 0, x->size() - 1) * x->back() * (*w)[0];
}

// One direction of a convolution: 2 * N * (output positions) * C_out * (C_in/groups) * kernel.
// `out_spatial` is the product of the output's spatial sizes.
int64_t conv_cost(const std::vector<int64_t>& input, const std::vector<int64_t>& weight, int64_t out_spatial,
                  bool transposed) {
  if (input.size() < 3 || weight.size() != input.size()) return 0;
  const int64_t n = input[0];
  const int64_t kernel = product(weight, 2, weight.size());
  // weight: [C_out, C_in/g, k...] (transposed: [C_in, C_out/g, k...]); per output (or input, when
  // transposed) position every weight element is one multiply-add.
  const int64_t positions = transposed ? product(input, 2, input.size()) : out_spatial;
  return 2 * n * positions * weight[0] * weight[1] * kernel;
}

const std::vector<int64_t>* ints_at(const Inputs& in, size_t i) {
  return i < in.size() && (in[i].kind == OpInput::Kind::IntList || in[i].kind == OpInput::Kind::Scalar) ? &in[i].v
                                                                                                         : nullptr;
}

// Output spatial sizes of a (non-transposed) convolution from its arguments.
int64_t conv_out_spatial(const std::vector<int64_t>& input, const std::vector<int64_t>& weight,
                         const std::vector<int64_t>* stride, const std::vector<int64_t>* padding,
                         const std::vector<int64_t>* dilation) {
  const size_t dims = input.size() - 2;
  auto pick = [&](const std::vector<int64_t>* v, size_t i, int64_t dflt) {
    if (!v || v->empty()) return dflt;
    return v->size() == 1 ? (*v)[0] : i < v->size() ? (*v)[i] : dflt;
  };
  int64_t out = 1;
  for (size_t i = 0; i < dims; ++i) {
    const int64_t in = input[2 + i], k = weight[2 + i];
    const int64_t s = pick(stride, i, 1), p = pick(padding, i, 0), d = pick(dilation, i, 1);
    const int64_t o = (in + 2 * p - d * (k - 1) - 1) / std::max<int64_t>(s, 1) + 1;
    if (o <= 0) return 0;
    out *= o;
  }
  return out;
}

// conv1d/2d/3d(input, weight, bias, stride, padding, dilation, groups) and
// convolution/_convolution(input, weight, bias, stride, padding, dilation, transposed, ...)
int64_t conv_forward(const Inputs& in, bool has_transposed_flag) {
  const auto *x = tensor_at(in, 0), *w = tensor_at(in, 1);
  if (!x || !w) return 0;
  // padding may be a string ("same") for conv2d: then the output keeps the input's size.
  const bool string_padding = in.size() > 4 && in[4].kind == OpInput::Kind::Other;
  bool transposed = false;
  if (has_transposed_flag) {
    const auto* t = ints_at(in, 6);
    transposed = t && !t->empty() && (*t)[0] != 0;
  }
  const int64_t out = string_padding ? product(*x, 2, x->size())
                                     : conv_out_spatial(*x, *w, ints_at(in, 3), ints_at(in, 4), ints_at(in, 5));
  return conv_cost(*x, *w, out, transposed);
}

// convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
//                      transposed, output_padding, groups, output_mask[3])
int64_t conv_backward(const Inputs& in) {
  const auto *gy = tensor_at(in, 0), *x = tensor_at(in, 1), *w = tensor_at(in, 2);
  if (!gy || !x || !w || gy->size() < 3) return 0;
  const auto* t = ints_at(in, 7);
  const bool transposed = t && !t->empty() && (*t)[0] != 0;
  const int64_t one = conv_cost(*x, *w, product(*gy, 2, gy->size()), transposed);
  const auto* mask = ints_at(in, 10);
  if (!mask || mask->size() < 2) return 2 * one;
  return one * (((*mask)[0] ? 1 : 0) + ((*mask)[1] ? 1 : 0));  // grad_input, grad_weight
}

// blocklab's fused attention (models/attention.h), recorded with q [N, H, Tq, D] and k [N, H, Tk, D]:
// the products q k^T and P v, 2 N H Tq Tk D each; its backward does four (dP, dQ, dK, dV).
int64_t fused_attention(const Inputs& in, int products) {
  const auto *q = tensor_at(in, 0), *k = tensor_at(in, 1);
  if (!q || !k || q->size() != 4 || k->size() != 4) return 0;
  return products * 2 * (*q)[0] * (*q)[1] * (*q)[2] * (*k)[2] * (*q)[3];
}

// blocklab's dense (models/dense.h; dense_activation: an MLP's first layer with its activation),
// recorded with x [M, in], W [out, in] and, backward, how many
// of the two products (dx, dW) it computes: 2 M in out each.
int64_t dense(const Inputs& in, bool backward) {
  const auto *x = tensor_at(in, 0), *w = tensor_at(in, 1);
  const auto* products = backward ? ints_at(in, 2) : nullptr;
  if (!x || !w || x->size() != 2 || w->size() != 2 || (backward && (!products || products->empty()))) return 0;
  return (backward ? (*products)[0] : 1) * 2 * (*x)[0] * (*x)[1] * (*w)[0];
}

using Counter = std::function<int64_t(const Inputs&)>;

const std::unordered_map<std::string, Counter>& counters() {
  static const std::unordered_map<std::string, Counter> table = {
      {"aten::mm", [](const Inputs& in) { return mm(in, 0, 1); }},
      {"aten::addmm", [](const Inputs& in) { return mm(in, 1, 2); }},  // bias(0) + mat1 @ mat2
      {"aten::bmm", [](const Inputs& in) { return bmm(in, 0, 1); }},
      {"aten::baddbmm", [](const Inputs& in) { return bmm(in, 1, 2); }},
      {"aten::matmul", matmul},
      {"aten::linear", linear},
      {"aten::conv1d", [](const Inputs& in) { return conv_forward(in, false); }},
      {"aten::conv2d", [](const Inputs& in) { return conv_forward(in, false); }},
      {"aten::conv3d", [](const Inputs& in) { return conv_forward(in, false); }},
      {"aten::convolution", [](const Inputs& in) { return conv_forward(in, true); }},
      {"aten::_convolution", [](const Inputs& in) { return conv_forward(in, true); }},
      {"aten::convolution_backward", conv_backward},
      {"blocklab::fused_attention", [](const Inputs& in) { return fused_attention(in, 2); }},
      {"blocklab::fused_attention_backward", [](const Inputs& in) { return fused_attention(in, 4); }},
      {"blocklab::dense", [](const Inputs& in) { return dense(in, false); }},
      {"blocklab::dense_activation", [](const Inputs& in) { return dense(in, false); }},  // (+ the activation)
      {"blocklab::dense_backward", [](const Inputs& in) { return dense(in, true); }},
  };
  return table;
}

}  // namespace

int64_t op_flops(const std::string& name, const std::vector<OpInput>& inputs) {
  const auto& table = counters();
  const auto it = table.find(name);
  return it == table.end() ? 0 : std::max<int64_t>(0, it->second(inputs));
}

bool counts_flops(const std::string& name) { return counters().count(name) > 0; }

std::string shapes_string(const std::vector<OpInput>& inputs) {
  std::string out;
  for (const auto& in : inputs) {
    if (in.kind != OpInput::Kind::Tensor) continue;
    if (!out.empty()) out += ", ";
    out += fmt::format("[{}]", fmt::join(in.v, ", "));
  }
  return out;
}

}  // namespace blocklab
