#include "models/tokens.h"

#include <ATen/record_function.h>

#include <algorithm>

#include "models/autograd.h"
#include "util/simd.h"

namespace blocklab {

namespace {

// Row n of a lead token [N, d] (its last dimension contiguous; an expanded token has stride 0).
template <typename T>
const T* lead_row(const torch::Tensor& t, int64_t n) {
  return t.data_ptr<T>() + n * t.stride(0);
}

// out [N, T, d] = the tokens + pos, sample by sample.
torch::Tensor sequence_forward(const std::vector<torch::Tensor>& lead, const torch::Tensor& patches,
                             const torch::Tensor& pos) {
  RECORD_FUNCTION("blocklab::tokens", std::vector<c10::IValue>({patches, pos}));
  const int64_t n = patches.size(0), p = patches.size(1), d = patches.size(2), l = int64_t(lead.size());
  auto out = torch::empty({n, l + p, d}, patches.options());
  AT_DISPATCH_FLOATING_TYPES(patches.scalar_type(), "tokens", [&] {
    const scalar_t *src = patches.data_ptr<scalar_t>(), *position = pos.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    const auto add_row = [&](const scalar_t* x, int64_t t) {
      const scalar_t* at = position + t * d;
      for (int64_t j = 0; j < d; ++j) dst[j] = x[j] + at[j];
      dst += d;
    };
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t t = 0; t < l; ++t) add_row(lead_row<scalar_t>(lead[size_t(t)], i), t);
      for (int64_t t = 0; t < p; ++t, src += d) add_row(src, l + t);
    }
  });
  return out;
}

class FusedTokens : public torch::autograd::Function<FusedTokens> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& patches,
                               const torch::Tensor& pos, torch::TensorList lead) {
    ctx->saved_data["lead"] = int64_t(lead.size());
    return sequence_forward(lead.vec(), patches, pos);
  }

  // d_lead[t] = dout[:, t], d_patches = dout[:, L:], d_pos = the sum of dout over samples (in order).
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto dout = grads[0].contiguous();
    RECORD_FUNCTION("blocklab::tokens_backward", std::vector<c10::IValue>({dout}));
    const int64_t l = ctx->saved_data["lead"].toInt(), n = dout.size(0), t_all = dout.size(1), d = dout.size(2);
    auto dpatches = torch::empty({n, t_all - l, d}, dout.options());
    auto dpos = torch::zeros({1, t_all, d}, dout.options());
    std::vector<torch::Tensor> dlead;
    for (int64_t t = 0; t < l; ++t) dlead.push_back(torch::empty({n, d}, dout.options()));
    AT_DISPATCH_FLOATING_TYPES(dout.scalar_type(), "tokens backward", [&] {
      const scalar_t* src = dout.data_ptr<scalar_t>();
      scalar_t *dp = dpatches.data_ptr<scalar_t>(), *sum = dpos.data_ptr<scalar_t>();
      std::vector<scalar_t*> dl;
      for (auto& g : dlead) dl.push_back(g.data_ptr<scalar_t>());
      for (int64_t i = 0; i < n; ++i)
        for (int64_t t = 0; t < t_all; ++t, src += d) {
          scalar_t* to = t < l ? dl[size_t(t)] + i * d : dp + ((i * (t_all - l)) + t - l) * d;
          scalar_t* acc = sum + t * d;
          for (int64_t j = 0; j < d; ++j) {
            to[j] = src[j];
            acc[j] += src[j];
          }
        }
    });
    torch::autograd::tensor_list out{dpatches, dpos};
    out.insert(out.end(), dlead.begin(), dlead.end());
    return out;
  }
};

bool token_sequence_fusable(const std::vector<torch::Tensor>& lead, const torch::Tensor& patches, const torch::Tensor& pos) {
  if (!simd::fused_kernels_enabled() || !simd::cpu_floating(patches) || patches.dim() != 3 || !patches.is_contiguous())
    return false;
  const auto type = patches.scalar_type();
  const int64_t n = patches.size(0), d = patches.size(2);
  if (pos.dim() != 3 || pos.size(0) != 1 || pos.size(1) != int64_t(lead.size()) + patches.size(1) || pos.size(2) != d ||
      !pos.is_contiguous() || pos.scalar_type() != type || !pos.device().is_cpu())
    return false;
  return std::all_of(lead.begin(), lead.end(), [&](const torch::Tensor& t) {
    return t.dim() == 2 && t.size(0) == n && t.size(1) == d && t.stride(1) == 1 && t.scalar_type() == type &&
           t.device().is_cpu();
  });
}

}  // namespace

torch::Tensor token_sequence_reference(const std::vector<torch::Tensor>& lead, const torch::Tensor& patches,
                               const torch::Tensor& pos) {
  std::vector<torch::Tensor> all;
  for (const auto& t : lead) all.push_back(t.unsqueeze(1));
  all.push_back(patches);
  return torch::cat(all, 1) + pos;
}

torch::Tensor token_sequence(const std::vector<torch::Tensor>& lead, const torch::Tensor& patches, const torch::Tensor& pos) {
  if (!token_sequence_fusable(lead, patches, pos)) return token_sequence_reference(lead, patches, pos);
  bool grad = records_grad(patches, pos);
  for (const auto& t : lead) grad = grad || records_grad(t);
  if (!grad) return sequence_forward(lead, patches, pos);
  return FusedTokens::apply(patches, pos, torch::TensorList(lead));
}

}  // namespace blocklab
