#include "train/assemble.h"

#include <fmt/format.h>

#include "families/family.h"
#include "train/checkpoint.h"
#include "util/error.h"

namespace blocklab {

TensorMap assemble_blocks(const std::vector<std::string>& files, const std::string& config) {
  TensorMap out;
  for (size_t b = 0; b < files.size(); ++b) {
    const auto prefix = block_prefix(int64_t(b));
    std::map<std::string, std::string> meta;
    auto tensors = load_safetensors(files[b], &meta);
    if (meta["config"] != config)
      throw UserError(fmt::format("{}: weights of another run ({}); this run is {}", files[b],
                                  describe_weights(meta["config"]), describe_weights(config)));
    for (auto& [name, t] : tensors) {
      if (name.rfind("blocks.", 0) == 0) {
        if (name.rfind(prefix, 0) != 0)
          throw UserError(fmt::format("{}: holds {}, which is not block {}'s", files[b], name, b));
        out[name] = t;
      } else if (b == 0) {
        out[name] = t;
      } else {
        check_same_outside_blocks(out, files[0], name, t, files[b]);
      }
    }
  }
  return out;
}

void check_same_outside_blocks(const TensorMap& reference, const std::string& reference_file, const std::string& name,
                               const torch::Tensor& t, const std::string& file) {
  const auto it = reference.find(name);
  if (it == reference.end() || !torch::equal(it->second, t))
    throw UserError(
        fmt::format("{}: {} differs from {}'s: the blocks did not share these modules", file, name, reference_file));
}

TensorMap owned_by_block(const TensorMap& state, int block, bool inside) {
  const auto prefix = block_prefix(block);
  TensorMap out;
  for (const auto& [name, t] : state) {
    const auto dot = name.find('.');  // after the kind: model., optim., ema.
    if ((name.compare(dot + 1, prefix.size(), prefix) == 0) == inside) out[name] = t;
  }
  return out;
}

}  // namespace blocklab
