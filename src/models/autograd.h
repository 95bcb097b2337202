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

}  // namespace blocklab
