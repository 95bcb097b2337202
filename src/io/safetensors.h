// The safetensors format (huggingface/safetensors): u64 little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}}, then the raw little-endian bytes.
// Files written here load with Python's `safetensors.torch.load_file`.
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>

namespace blocklab {

using TensorMap = std::map<std::string, torch::Tensor>;

/// Serializes tensors (any device; copied to CPU, made contiguous) with optional string metadata.
std::string safetensors_bytes(const TensorMap& tensors, const std::map<std::string, std::string>& metadata = {});
/// Writes atomically.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});
/// Parses a safetensors file; UserError naming the file if it is malformed.
TensorMap load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);
TensorMap parse_safetensors(const std::string& bytes, const std::string& name,
                            std::map<std::string, std::string>* metadata = nullptr);

}  // namespace blocklab
