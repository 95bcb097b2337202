#include "models/cross_entropy.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>

#include "models/autograd.h"
#include "util/simd.h"

namespace blocklab {

namespace {

// With p = softmax(l) and lse = log sum_k e^{l_k}: ce = lse - (1 - s) l_y - (s / K) sum_k l_k,
// (1 - s) (-log p_y) + s mean_k(-log p_k). Keeps p, which backward needs.
template <typename T>
void forward_rows(const T* logits, const int64_t* labels, int64_t rows, int64_t k, T smoothing, T* ce, T* p) {
  for (int64_t r = 0; r < rows; ++r, logits += k, p += k) {
    // (as libtorch's nll_loss checks its targets: one out of range would index past the row)
    TORCH_CHECK(labels[r] >= 0 && labels[r] < k, "cross_entropy: label ", labels[r], " is outside [0, ", k, ")");
    const T top = *std::max_element(logits, logits + k);
    T sum = 0, total = 0;
    for (int64_t j = 0; j < k; ++j) {
      p[j] = std::exp(logits[j] - top);
      sum += p[j];
      total += logits[j];
    }
    for (int64_t j = 0; j < k; ++j) p[j] /= sum;
    const T lse = top + std::log(sum);
    ce[r] = lse - (1 - smoothing) * logits[labels[r]] - smoothing / T(k) * total;
  }
}

// d logits = dce (p - (1 - s) onehot(y) - s / K).
template <typename T>
void backward_rows(const T* p, const int64_t* labels, const T* dce, int64_t rows, int64_t k, T smoothing, T* dlogits) {
  for (int64_t r = 0; r < rows; ++r, p += k, dlogits += k) {
    for (int64_t j = 0; j < k; ++j) dlogits[j] = dce[r] * (p[j] - smoothing / T(k));
    dlogits[labels[r]] -= dce[r] * (1 - smoothing);
  }
}

class CrossEntropy : public torch::autograd::Function<CrossEntropy> {
 public:
  // logits [R, K] and labels [R], contiguous.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& labels, double smoothing) {
    RECORD_FUNCTION("blocklab::cross_entropy", std::vector<c10::IValue>({logits}));
    auto ce = torch::empty({logits.size(0)}, logits.options()), p = torch::empty_like(logits);
    AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "cross_entropy", [&] {
      forward_rows<scalar_t>(logits.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(), logits.size(0), logits.size(1),
                             scalar_t(smoothing), ce.data_ptr<scalar_t>(), p.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({p, labels});
    ctx->saved_data["smoothing"] = smoothing;
    return ce;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &p = s[0], &labels = s[1];
    const auto dce = grads[0].contiguous();
    RECORD_FUNCTION("blocklab::cross_entropy_backward", std::vector<c10::IValue>({dce}));
    auto dlogits = torch::empty_like(p);
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "cross_entropy backward", [&] {
      backward_rows<scalar_t>(p.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(), dce.data_ptr<scalar_t>(), p.size(0),
                              p.size(1), scalar_t(ctx->saved_data["smoothing"].toDouble()), dlogits.data_ptr<scalar_t>());
    });
    return {dlogits, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor cross_entropy_reference(const torch::Tensor& logits, const torch::Tensor& labels, double label_smoothing) {
  namespace F = torch::nn::functional;
  const auto options = F::CrossEntropyFuncOptions().reduction(torch::kNone).label_smoothing(label_smoothing);
  const int64_t k = logits.size(-1);
  return F::cross_entropy(logits.reshape({-1, k}), labels.reshape({-1}), options).view(labels.sizes());
}

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, double label_smoothing) {
  if (!simd::fused_kernels_enabled() || !simd::cpu_floating(logits) || logits.dim() == 0 ||
      labels.scalar_type() != torch::kLong || labels.device() != logits.device() ||
      labels.sizes() != logits.sizes().slice(0, logits.dim() - 1) || logits.size(-1) == 0)
    return cross_entropy_reference(logits, labels, label_smoothing);
  const int64_t k = logits.size(-1);
  const auto rows = logits.reshape({-1, k}).contiguous();
  return CrossEntropy::apply(rows, labels.reshape({-1}).contiguous(), label_smoothing).view(labels.sizes());
}

}  // namespace blocklab
