#include "io/png.h"

#include <png.h>

#include <csetjmp>
#include <cstring>

#include <fmt/format.h>

#include "io/atomic_file.h"
#include "util/error.h"

namespace blocklab {

namespace {

// libpng reports errors by longjmp; these callbacks keep its messages for ours.
struct PngError {
  std::string message;
};
void on_png_error(png_structp png, png_const_charp message) {
  static_cast<PngError*>(png_get_error_ptr(png))->message = message;
  png_longjmp(png, 1);
}
void on_png_warning(png_structp, png_const_charp) {}

void append_bytes(png_structp png, png_bytep data, png_size_t n) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
}
void flush_nothing(png_structp) {}

struct Reader {
  const std::string* bytes;
  size_t at = 0;
};
void read_bytes(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<Reader*>(png_get_io_ptr(png));
  if (r->at + n > r->bytes->size()) png_error(png, "truncated");
  std::memcpy(out, r->bytes->data() + r->at, n);
  r->at += n;
}

}  // namespace

std::string png_bytes(const torch::Tensor& image) {
  TORCH_CHECK(image.scalar_type() == torch::kUInt8 && (image.dim() == 2 || (image.dim() == 3 && image.size(2) == 3)),
              "png_bytes: expected uint8 [H, W] or [H, W, 3]");
  const auto img = image.contiguous().cpu();
  const auto height = png_uint_32(img.size(0)), width = png_uint_32(img.size(1));
  // (volatile: GCC cannot tell that setjmp below leaves it alone)
  const volatile int channels = img.dim() == 2 ? 1 : 3;
  PngError error;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  std::string out;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw UserError("cannot encode PNG: " + error.message);
  }
  png_set_write_fn(png, &out, append_bytes, flush_nothing);
  png_set_IHDR(png, info, width, height, 8, channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const auto* data = img.data_ptr<uint8_t>();
  for (png_uint_32 y = 0; y < height; ++y)
    png_write_row(png, const_cast<png_bytep>(data + size_t(y) * width * size_t(channels)));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

void write_png(const std::string& path, const torch::Tensor& image) { write_file_atomic(path, png_bytes(image)); }

torch::Tensor decode_png(const std::string& bytes, const std::string& name) {
  if (bytes.size() < 8 || png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) != 0)
    throw UserError(fmt::format("{}: not a PNG file", name));
  PngError error;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  Reader reader{&bytes};
  torch::Tensor out;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw UserError(fmt::format("{}: malformed PNG ({})", name, error.message));
  }
  png_set_read_fn(png, &reader, read_bytes);
  png_read_info(png, info);
  // Normalize to 8-bit grey or RGB.
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_packing(png);
  png_set_expand(png);
  png_read_update_info(png, info);
  const auto height = png_get_image_height(png, info), width = png_get_image_width(png, info);
  const int channels = png_get_channels(png, info);
  out = channels == 1 ? torch::empty({int64_t(height), int64_t(width)}, torch::kUInt8)
                      : torch::empty({int64_t(height), int64_t(width), int64_t(channels)}, torch::kUInt8);
  auto* data = out.data_ptr<uint8_t>();
  for (png_uint_32 y = 0; y < height; ++y) png_read_row(png, data + size_t(y) * width * size_t(channels), nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return out;
}

torch::Tensor image_grid(const torch::Tensor& images, int64_t columns, double lo, double hi, int64_t gap) {
  TORCH_CHECK(images.dim() == 4 && (images.size(1) == 1 || images.size(1) == 3), "image_grid: expected [N, 1|3, H, W]");
  TORCH_CHECK(columns > 0 && hi > lo && gap >= 0, "image_grid: bad layout");
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const int64_t rows = (n + columns - 1) / columns;
  auto pixels = ((images.detach().to(torch::kCPU, torch::kFloat64) - lo) * (255.0 / (hi - lo))).round().clamp(0, 255);
  auto grid = torch::zeros({rows * (h + gap) + gap, columns * (w + gap) + gap, c}, torch::kUInt8);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t top = gap + (i / columns) * (h + gap), left = gap + (i % columns) * (w + gap);
    grid.narrow(0, top, h).narrow(1, left, w).copy_(pixels[i].permute({1, 2, 0}).to(torch::kUInt8));
  }
  return c == 1 ? grid.squeeze(2) : grid;
}

}  // namespace blocklab
