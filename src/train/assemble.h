// A whole model from per-block weight files (blocks trained in their own processes, or one at a
// time): each file holds its block's `blocks.{K}.*` and the modules outside the blocks.
#pragma once
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace blocklab {

/// files[K] holds block K, written by a run of config `config` (TOML, as in the files' metadata).
/// Tensors outside the blocks (the shared modules, fixed buffers) must be bit-identical in every
/// file, as synchronised training keeps them: UserError naming the tensor and the two files
/// otherwise, or when a file holds another block's tensors or belongs to another run.
TensorMap assemble_blocks(const std::vector<std::string>& files, const std::string& config);

/// UserError unless tensor `name` outside the blocks, as `file` holds it, equals `reference`'s
/// (read from `reference_file`): blocks that shared their modules hold bit-identical copies.
void check_same_outside_blocks(const TensorMap& reference, const std::string& reference_file, const std::string& name,
                               const torch::Tensor& t, const std::string& file);

/// The tensors of block `block` in a training state (`model.blocks.K.*`, `optim...`, `ema...`),
/// or, with `inside = false`, the others.
TensorMap owned_by_block(const TensorMap& state, int block, bool inside = true);

}  // namespace blocklab
