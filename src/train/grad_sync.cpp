#include "train/grad_sync.h"

#include "families/family.h"

namespace blocklab {

SharedGradients::SharedGradients(const AdamW& opt) {
  for (const auto& [name, p] : opt.params()) {
    if (name.rfind("shared.", 0) == 0) {
      shared_.push_back(p);
      reached_.push_back(false);
      numel_ += p.numel();
    } else {
      others_.push_back(p);
      other_names_.push_back(name);
    }
  }
}

torch::Tensor SharedGradients::take(int block) {
  torch::NoGradGuard no_grad;
  const auto options = shared_.empty() ? torch::TensorOptions() : shared_.front().options();
  auto buffer = torch::zeros({numel_ + 1}, options.dtype(torch::kFloat32));
  int64_t at = 0;
  for (size_t i = 0; i < shared_.size(); ++i) {
    auto& p = shared_[i];
    if (p.grad().defined()) {
      buffer.narrow(0, at, p.numel()).copy_(p.grad().reshape({-1}));
      reached_[i] = true;
    }
    at += p.numel();
    p.mutable_grad().reset();
  }
  // Summed on the device: no host round trip per parameter.
  auto [it, first] = of_block_.try_emplace(block);
  if (first)
    for (size_t i = 0; i < others_.size(); ++i)
      if (other_names_[i].rfind(block_prefix(block), 0) == 0) it->second.push_back(i);
  auto squares = torch::zeros({}, options.dtype(torch::kFloat64));
  for (size_t i : it->second)
    if (others_[i].grad().defined()) squares += others_[i].grad().to(torch::kFloat64).pow(2).sum();
  buffer[numel_] = squares;
  return buffer;
}

double SharedGradients::restore(const torch::Tensor& summed) {
  torch::NoGradGuard no_grad;
  int64_t at = 0;
  for (size_t i = 0; i < shared_.size(); ++i) {
    auto& p = shared_[i];
    // A parameter no backward reaches (the class token when unused) keeps no gradient: AdamW skips it.
    if (reached_[i]) p.mutable_grad() = summed.narrow(0, at, p.numel()).view(p.sizes()).to(p.dtype()).clone();
    at += p.numel();
  }
  const double shared_squares = summed.narrow(0, 0, numel_).to(torch::kFloat64).pow(2).sum().item<double>();
  return std::sqrt(summed[numel_].item<double>() + shared_squares);
}

}  // namespace blocklab
