#include "io/idx.h"

#include <zlib.h>

#include <filesystem>
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

// Reads exactly n bytes or reports how many were there.
void read_exact(gzFile f, void* dst, size_t n, const std::string& path, const char* what) {
  size_t got = 0;
  auto* out = static_cast<char*>(dst);
  while (got < n) {
    const unsigned chunk = unsigned(std::min<size_t>(n - got, 1u << 30));
    const int r = gzread(f, out + got, chunk);
    if (r < 0) throw UserError(fmt::format("{}: cannot read {}: corrupt or not a gzip/IDX file", path, what));
    if (r == 0) break;
    got += size_t(r);
  }
  if (got != n)
    throw UserError(fmt::format("{}: truncated {} (expected {} bytes, found {})", path, what, n, got));
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
  GzFile gz{gzopen(path.c_str(), "rb")};
  if (!gz.f) throw UserError(fmt::format("{}: cannot open file", path));
  unsigned char magic[4];
  read_exact(gz.f, magic, 4, path, "header");
  // Magic: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] != expected_dims)
    throw UserError(fmt::format("{}: bad magic number 0x{:08x} (expected 0x{:08x}: IDX, unsigned bytes, {} dims)",
                                path, big_endian(magic), 0x800u + unsigned(expected_dims), expected_dims));
  std::vector<int64_t> shape(expected_dims);
  int64_t total = 1;
  for (auto& s : shape) {
    unsigned char dim[4];
    read_exact(gz.f, dim, 4, path, "header");
    s = big_endian(dim);
    if (s <= 0 || s > (int64_t(1) << 31)) throw UserError(fmt::format("{}: implausible dimension {}", path, s));
    total *= s;
  }
  auto t = torch::empty(shape, torch::kUInt8);
  read_exact(gz.f, t.data_ptr<uint8_t>(), size_t(total), path, "data");
  unsigned char extra;
  if (gzread(gz.f, &extra, 1) > 0)
    throw UserError(fmt::format("{}: trailing bytes after {} items: not a well-formed IDX file", path, shape[0]));
  return t;
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
