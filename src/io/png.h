// PNG files (libpng): what `sample` grids and report figures are written as. Writes are atomic.
#pragma once
#include <torch/torch.h>

#include <string>

namespace blocklab {

/// Encodes an 8-bit image, [H, W] (grey) or [H, W, 3] (RGB), uint8, as PNG bytes.
std::string png_bytes(const torch::Tensor& image);
/// png_bytes written atomically to `path`. UserError naming the file on failure.
void write_png(const std::string& path, const torch::Tensor& image);
/// Decodes PNG bytes to [H, W] (grey) or [H, W, 3] (RGB) uint8. UserError naming `name` if malformed.
torch::Tensor decode_png(const std::string& bytes, const std::string& name);

/// Tiles images [N, C, H, W] (C = 1 or 3; any range, mapped from [lo, hi] to 0..255 and clipped)
/// into a grid of `columns` with a `gap`-pixel border between them: [rows*(H+gap)+gap, ..., C].
torch::Tensor image_grid(const torch::Tensor& images, int64_t columns, double lo, double hi, int64_t gap = 2);

}  // namespace blocklab
