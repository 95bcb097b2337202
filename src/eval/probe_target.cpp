#include "eval/probe_target.h"

#include "util/seed.h"

namespace blocklab {

ProbeBatches probe_batches(const Dataset& data, int64_t batch_size, int64_t count, uint64_t seed,
                           const torch::Device& device) {
  ProbeBatches out;
  DataOrder order(data.size(Split::Train), batch_size, derive_seed(seed, Stream::ProbeBatch, 0));
  for (int64_t m = 0; m < count; ++m) {
    out.batches.push_back(data.batch(Split::Train, order.indices(m), device));
    out.seeds.push_back(derive_seed(seed, Stream::ProbeBatch, uint64_t(m + 1)));
  }
  return out;
}

ProbeLoss family_probe_loss(Family& family, const ProbeBatches& fixed, int block) {
  return [&family, &fixed, block]() {
    torch::Tensor total;
    for (size_t m = 0; m < fixed.batches.size(); ++m) {
      torch::manual_seed(fixed.seeds[m]);
      const auto value = family.loss(fixed.batches[m], block, fixed.seeds[m]).value;
      total = total.defined() ? total + value : value;
    }
    return total / double(fixed.batches.size());
  };
}

std::vector<std::pair<std::string, torch::Tensor>> probe_candidates(torch::nn::Module& model, int block) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  const auto own = block_prefix(block);
  for (const auto& p : model.named_parameters()) {
    const auto& name = p.key();
    if (!p.value().requires_grad()) continue;
    if (block < 0 || name.rfind(own, 0) == 0 || name.rfind("shared.", 0) == 0) out.emplace_back(name, p.value());
  }
  return out;
}

}  // namespace blocklab
