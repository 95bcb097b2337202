#include "io/idx.h"

#include <zlib.h>

#include <filesystem>
#include <memory>
#include <vector>
#include <fmt/format.h>

#include "util/error.h"

namespace blocklab {
namespace {

struct GzFile {
  gzFile f;
  ~GzFile() {
    if (f) gzclose(f);
  }
};

// The whole decompressed stream (a plain file passes through unchanged). Reading to the end makes
// zlib check every gzip member's CRC-32 and length: a corrupt file fails here, not later as pixels.
std::string read_stream(const std::string& path) {
  GzFile gz{gzopen(path.c_str(), "rb")};
  if (!gz.f) throw UserError(fmt::format("{}: cannot open file", path));
  std::string out;
  std::vector<char> chunk(size_t(1) << 20);
  for (;;) {
    const int r = gzread(gz.f, chunk.data(), unsigned(chunk.size()));
    if (r < 0) {
      int code = 0;
      const char* why = gzerror(gz.f, &code);
      throw UserError(fmt::format("{}: corrupt file ({})", path, why && *why ? why : "read error"));
    }
    if (r == 0) break;
    out.append(chunk.data(), size_t(r));
  }
  return out;
}

uint32_t big_endian(const unsigned char* b) {
  return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
}

std::string find_file(const std::string& dir, const std::string& name) {
  for (const auto& candidate : {name, name + ".gz"}) {
    auto p = std::filesystem::path(dir) / candidate;
    if (std::filesystem::exists(p)) return p.string();
  }
  throw UserError(fmt::format("{0}: missing data file (looked for {0}/{1} and {0}/{1}.gz)", dir, name));
}

}  // namespace

torch::Tensor read_idx(const std::string& path, int expected_dims) {
  // The tensor will own this buffer (no second copy of a 47 MB image file in memory).
  auto owned = std::make_unique<std::string>(read_stream(path));
  const std::string& bytes = *owned;
  const size_t header = 4 + 4 * size_t(expected_dims);
  if (bytes.size() < header)
    throw UserError(fmt::format("{}: truncated header ({} bytes, expected {})", path, bytes.size(), header));
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  // Magic: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
  if (b[0] != 0 || b[1] != 0 || b[2] != 0x08 || b[3] != expected_dims)
    throw UserError(fmt::format("{}: bad magic number 0x{:08x} (expected 0x{:08x}: IDX, unsigned bytes, {} dims)",
                                path, big_endian(b), 0x800u + unsigned(expected_dims), expected_dims));
  // The header's sizes are checked against the bytes present, with overflow checks, before any
  // allocation: a header claiming 2^24 images in a small file is refused, not allocated.
  std::vector<int64_t> shape(static_cast<size_t>(expected_dims));
  const size_t data = bytes.size() - header;
  size_t total = 1;
  for (int i = 0; i < expected_dims; ++i) {
    const int64_t s = big_endian(b + 4 + 4 * i);
    if (s <= 0) throw UserError(fmt::format("{}: dimension {} is 0", path, i));
    if (total > data / size_t(s))
      throw UserError(fmt::format("{}: truncated: the header claims more than the {} bytes after it", path, data));
    total *= size_t(s);
    shape[size_t(i)] = s;
  }
  if (total != data)
    throw UserError(fmt::format("{}: header claims {} bytes of data, the file holds {}{}", path, total, data,
                                total < data ? ": trailing bytes, not a well-formed IDX file" : " (truncated)"));
  auto* buffer = owned.release();
  return torch::from_blob(buffer->data() + header, shape, [buffer](void*) { delete buffer; }, torch::kUInt8);
}

ImageSplit load_idx_split(const std::string& dir, const std::string& prefix) {
  const auto image_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const auto label_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  auto images = read_idx(image_path, 3);
  auto labels = read_idx(label_path, 1);
  if (images.size(0) != labels.size(0))
    throw UserError(fmt::format("{}: {} labels but {} has {} images", label_path, labels.size(0), image_path,
                                images.size(0)));
  return {images.unsqueeze(1), labels.to(torch::kInt64), label_path};
}

}  // namespace blocklab
