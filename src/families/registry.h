// The families blocklab knows, by model.family. Adding a family: a folder under src/families/,
// a [section] of keys in io/config.cpp, and one case in each function here (docs/architecture.md).
#pragma once
#include <memory>
#include <optional>

#include "families/family.h"
#include "io/config.h"

namespace blocklab {

/// The family's data set as the config names it. UserError naming the files on bad data.
std::shared_ptr<const Dataset> load_dataset(const Config& cfg);
/// Random data of the family's kind and default shape, `examples` per split: what `bench step`
/// and the profiler time (data does not change the cost of a step).
std::shared_ptr<const Dataset> synthetic_dataset(const Config& cfg, int64_t examples);
/// The family with a freshly initialized model (seeded from train.seed) on `device`, holding every
/// block or only `only_block` (initialized exactly as in the whole model).
/// UserError if the config does not fit the data (a patch that does not divide the images, ...).
std::unique_ptr<Family> make_family(const Config& cfg, std::shared_ptr<const Dataset> data, const torch::Device& device,
                                    std::optional<int> only_block = std::nullopt);

}  // namespace blocklab
