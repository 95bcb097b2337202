#include "io/safetensors.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "util/error.h"

namespace blocklab {
namespace {

const std::vector<std::pair<torch::Dtype, std::string>>& dtype_names() {
  static const std::vector<std::pair<torch::Dtype, std::string>> names = {
      {torch::kFloat32, "F32"}, {torch::kFloat64, "F64"}, {torch::kFloat16, "F16"}, {torch::kBFloat16, "BF16"},
      {torch::kInt64, "I64"},   {torch::kInt32, "I32"},   {torch::kInt16, "I16"},   {torch::kInt8, "I8"},
      {torch::kUInt8, "U8"},    {torch::kBool, "BOOL"}};
  return names;
}

std::string dtype_name(torch::Dtype d) {
  for (const auto& [dt, name] : dtype_names())
    if (dt == d) return name;
  throw std::invalid_argument(fmt::format("safetensors: unsupported dtype {}", c10::toString(d)));
}

}  // namespace

std::string safetensors_bytes(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> cpu;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {  // std::map: sorted names, a stable file
    auto c = t.detach().to(torch::kCPU).contiguous();
    const size_t nbytes = size_t(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype_name(c.scalar_type())}, {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    cpu.push_back(c);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // pad so the data starts 8-byte aligned
  std::string out(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  out += json;
  out.reserve(out.size() + offset);
  for (const auto& c : cpu) out.append(static_cast<const char*>(c.data_ptr()), size_t(c.numel()) * c.element_size());
  return out;
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, safetensors_bytes(tensors, metadata));
}

TensorMap parse_safetensors(const std::string& bytes, const std::string& name,
                            std::map<std::string, std::string>* metadata) {
  auto bad = [&](const std::string& why) { return UserError(fmt::format("{}: not a valid safetensors file: {}", name, why)); };
  if (bytes.size() < 8) throw bad("shorter than its 8-byte header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  if (n > bytes.size() - 8) throw bad("header length past the end of the file");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + long(n));
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("header is not JSON (") + e.what() + ")");
  }
  const size_t data_start = 8 + n, data_size = bytes.size() - data_start;
  TensorMap out;
  std::vector<std::pair<size_t, size_t>> spans;  // every tensor's [begin, end) in the data section
  for (const auto& [key, info] : header.items()) {
    try {
      if (key == "__metadata__") {
        if (metadata) *metadata = info.get<std::map<std::string, std::string>>();
        continue;
      }
      const auto dtype_str = info.at("dtype").get<std::string>();
      auto it = std::find_if(dtype_names().begin(), dtype_names().end(), [&](auto& p) { return p.second == dtype_str; });
      if (it == dtype_names().end()) throw bad(fmt::format("tensor {}: unsupported dtype {}", key, dtype_str));
      const auto shape = info.at("shape").get<std::vector<int64_t>>();
      const auto offsets = info.at("data_offsets").get<std::vector<size_t>>();
      // Size from the shape, checked against the file before anything is allocated.
      size_t nbytes = c10::elementSize(c10::typeMetaToScalarType(caffe2::TypeMeta::fromScalarType(it->first)));
      for (int64_t dim : shape) {
        if (dim < 0 || (dim > 0 && nbytes > data_size / size_t(dim)))
          throw bad(fmt::format("tensor {}: shape does not fit in the file", key));
        nbytes *= size_t(dim);
      }
      if (offsets.size() != 2 || offsets[1] < offsets[0] || offsets[1] - offsets[0] != nbytes || offsets[1] > data_size)
        throw bad(fmt::format("tensor {}: data offsets do not match its shape or the file size", key));
      spans.emplace_back(offsets[0], offsets[1]);
      auto t = torch::empty(shape, torch::TensorOptions().dtype(it->first));
      std::memcpy(t.data_ptr(), bytes.data() + data_start + offsets[0], nbytes);
      out.emplace(key, t);
    } catch (const nlohmann::json::exception& e) {
      throw bad(fmt::format("tensor {}: {}", key, e.what()));
    }
  }
  // The format leaves no holes and no overlaps: the tensors tile the data section from 0 to the end.
  std::sort(spans.begin(), spans.end());
  size_t end = 0;
  for (const auto& [b, e] : spans) {
    if (b != end) throw bad(b < end ? "tensors overlap" : "a gap between tensors");
    end = e;
  }
  if (end != data_size) throw bad(fmt::format("{} bytes after the last tensor", data_size - end));
  return out;
}

TensorMap load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  return parse_safetensors(read_file(path), path, metadata);
}

}  // namespace blocklab
