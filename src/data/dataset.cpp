#include "data/dataset.h"

#include <numeric>
#include <random>

#include "util/seed.h"

namespace blocklab {

DataOrder::DataOrder(int64_t size, int64_t batch_size, uint64_t seed)
    : size_(size), batch_(std::min(batch_size, size)), steps_per_epoch_(size / batch_), seed_(seed) {}

torch::Tensor DataOrder::indices(int64_t step) {
  const int64_t epoch = step / steps_per_epoch_, pos = step % steps_per_epoch_;
  if (epoch != cached_epoch_) {
    std::vector<int64_t> perm(static_cast<size_t>(size_));
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937_64 rng(derive_seed(seed_, Stream::DataOrder, uint64_t(epoch)));
    std::shuffle(perm.begin(), perm.end(), rng);
    perm_ = torch::tensor(perm, torch::kInt64);
    cached_epoch_ = epoch;
  }
  return perm_.slice(0, pos * batch_, (pos + 1) * batch_);
}

}  // namespace blocklab
