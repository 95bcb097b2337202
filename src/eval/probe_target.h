// What `probe random-step` probes in a family: the parameters of a target (the whole model, or
// one block with the shared modules) and its training loss over fixed batches with fixed noise,
// as a closure for eval/probe.h. The CLI loads the run; the tests call these on a tiny one.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "data/dataset.h"
#include "eval/probe.h"
#include "families/family.h"

namespace blocklab {

/// M training batches and the noise seed of each: the examples from a permutation drawn from
/// (seed, ProbeBatch, 0), batch m's noise from (seed, ProbeBatch, m + 1). Every evaluation of the
/// probed loss uses these, so L0, the update and every random step are the same function.
struct ProbeBatches {
  std::vector<Batch> batches;
  std::vector<uint64_t> seeds;
};
ProbeBatches probe_batches(const Dataset& data, int64_t batch_size, int64_t count, uint64_t seed,
                           const torch::Device& device);

/// The mean over `fixed` of the family's training loss (Loss::value, what backward runs on) of
/// `block` (-1: end-to-end), torch's generator reseeded with each batch's seed as training does.
/// The closure refers to `family` and `fixed`, which must outlive it.
ProbeLoss family_probe_loss(Family& family, const ProbeBatches& fixed, int block);

/// The candidates of a target by name: every parameter for block -1, else `blocks.K.*` and
/// `shared.*` (what a block's update may change). The CLI keeps those the loss reaches.
std::vector<std::pair<std::string, torch::Tensor>> probe_candidates(torch::nn::Module& model, int block);

}  // namespace blocklab
