// When the fused ops record themselves for autograd: they take their autograd function (which saves
// what backward needs, e.g. an activation's slope) only then, and a plain forward otherwise.
#pragma once
#include <torch/torch.h>

namespace blocklab {

/// Grad mode is on and some defined input requires a gradient.
template <typename... Tensors>
bool records_grad(const Tensors&... inputs) {
  return torch::GradMode::is_enabled() && ((inputs.defined() && inputs.requires_grad()) || ...);
}

/// Whether an autograd function's inputs first, first + 1 and first + 2 need their gradients
/// (a linear map's x, weight and bias).
inline std::array<bool, 3> inputs_needing_grad(torch::autograd::AutogradContext* ctx, size_t first) {
  return {ctx->needs_input_grad(first), ctx->needs_input_grad(first + 1), ctx->needs_input_grad(first + 2)};
}

}  // namespace blocklab
