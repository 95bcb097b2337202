#include "eval/probe_plot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>

#include <fmt/format.h>

namespace blocklab {
namespace {

// A 3x5 pixel font: five rows of three columns per character ('#' on), drawn at kProbeScale.
const std::map<char, std::array<const char*, 5>>& probe_font() {
  static const std::map<char, std::array<const char*, 5>> font = {
      {'0', {"###", "#.#", "#.#", "#.#", "###"}}, {'1', {".#.", "##.", ".#.", ".#.", "###"}},
      {'2', {"###", "..#", "###", "#..", "###"}}, {'3', {"###", "..#", ".##", "..#", "###"}},
      {'4', {"#.#", "#.#", "###", "..#", "..#"}}, {'5', {"###", "#..", "###", "..#", "###"}},
      {'6', {"###", "#..", "###", "#.#", "###"}}, {'7', {"###", "..#", ".#.", ".#.", ".#."}},
      {'8', {"###", "#.#", "###", "#.#", "###"}}, {'9', {"###", "#.#", "###", "..#", "###"}},
      {'-', {"...", "...", "###", "...", "..."}}, {'+', {"...", ".#.", "###", ".#.", "..."}},
      {'.', {"...", "...", "...", "...", ".#."}}, {'=', {"...", "###", "...", "###", "..."}},
      {':', {"...", ".#.", "...", ".#.", "..."}}, {'%', {"#.#", "..#", ".#.", "#..", "#.#"}},
      {'(', {"..#", ".#.", ".#.", ".#.", "..#"}}, {')', {"#..", ".#.", ".#.", ".#.", "#.."}},
      {'a', {"...", "##.", "..#", "###", "###"}}, {'b', {"#..", "#..", "###", "#.#", "###"}},
      {'c', {"...", "###", "#..", "#..", "###"}}, {'d', {"..#", "..#", "###", "#.#", "###"}},
      {'e', {"###", "#.#", "###", "#..", "###"}}, {'f', {".##", "#..", "##.", "#..", "#.."}},
      {'g', {"###", "#.#", "###", "..#", "##."}}, {'h', {"#..", "#..", "###", "#.#", "#.#"}},
      {'i', {".#.", "...", ".#.", ".#.", ".#."}}, {'k', {"#..", "#.#", "##.", "#.#", "#.#"}},
      {'l', {"##.", ".#.", ".#.", ".#.", "###"}}, {'m', {"...", "###", "###", "#.#", "#.#"}},
      {'n', {"...", "##.", "#.#", "#.#", "#.#"}}, {'o', {"...", "###", "#.#", "#.#", "###"}},
      {'p', {"###", "#.#", "###", "#..", "#.."}}, {'r', {"...", "###", "#..", "#..", "#.."}},
      {'s', {".##", "#..", ".#.", "..#", "##."}}, {'t', {".#.", "###", ".#.", ".#.", ".##"}},
      {'u', {"...", "#.#", "#.#", "#.#", "###"}}, {'v', {"...", "#.#", "#.#", "#.#", ".#."}},
      {'w', {"...", "#.#", "###", "###", "#.#"}}, {'x', {"...", "#.#", ".#.", "#.#", "#.#"}},
      {'y', {"#.#", "#.#", "###", "..#", "##."}}, {'z', {"...", "###", ".#.", "#..", "###"}},
      {'L', {"#..", "#..", "#..", "#..", "###"}}, {'N', {"#.#", "###", "###", "###", "#.#"}},
      {'/', {"..#", "..#", ".#.", "#..", "#.."}},
  };
  return font;
}

constexpr int64_t kProbeScale = 2;                          // font pixels per glyph pixel
constexpr int64_t kProbeAdvance = 4 * kProbeScale;          // glyph width plus a gap
constexpr int64_t kProbeLine = 7 * kProbeScale;             // text line height
constexpr int64_t kPanelW = 560, kPanelH = 200;             // one panel
constexpr int64_t kPlotL = 20, kPlotR = 540, kPlotT = 24, kPlotB = 168;  // its plot area
constexpr int64_t kProbeBins = 40;

using Rgb = std::array<uint8_t, 3>;
const Rgb kProbeBlack{30, 30, 30}, kProbeGrey{150, 150, 150}, kProbeRed{220, 30, 30}, kProbeBlue{40, 90, 200};

struct ProbeCanvas {
  int64_t h, w;
  std::vector<uint8_t> px;
  ProbeCanvas(int64_t height, int64_t width) : h(height), w(width), px(size_t(height * width * 3), 255) {}
  void set(int64_t y, int64_t x, const Rgb& c) {
    if (y < 0 || y >= h || x < 0 || x >= w) return;
    for (int k = 0; k < 3; ++k) px[size_t((y * w + x) * 3 + k)] = c[size_t(k)];
  }
  void rect(int64_t y0, int64_t x0, int64_t y1, int64_t x1, const Rgb& c) {
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = x0; x < x1; ++x) set(y, x, c);
  }
  // Text with its top-left corner at (y, x); characters the font lacks are left blank.
  void text(int64_t y, int64_t x, const std::string& s, const Rgb& c) {
    const auto& font = probe_font();
    for (char ch : s) {
      if (auto it = font.find(ch); it != font.end())
        for (int64_t r = 0; r < 5; ++r)
          for (int64_t q = 0; q < 3; ++q)
            if (it->second[size_t(r)][q] == '#') rect(y + r * kProbeScale, x + q * kProbeScale, y + (r + 1) * kProbeScale,
                                                       x + (q + 1) * kProbeScale, c);
      x += kProbeAdvance;
    }
  }
  static int64_t width_of(const std::string& s) { return int64_t(s.size()) * kProbeAdvance; }
};

std::string probe_number(double v) { return fmt::format("{:.3g}", v); }

void draw_panel(ProbeCanvas& canvas, int64_t top, int64_t left, const ProbePanel& panel) {
  const auto& row = panel.row;
  const std::string z = std::isfinite(row.z) ? fmt::format("{:.1f}", row.z) : "n/a";
  const auto title = fmt::format("{}  z={}  random better: {:.0f}%  ", panel.title, z, 100 * row.fraction_better);
  canvas.text(top + 4, left + kPlotL, title, kProbeBlack);
  canvas.text(top + 4, left + kPlotL + ProbeCanvas::width_of(title), "update dL=" + probe_number(row.update_change),
              kProbeRed);
  // The x range holds every random change, the update's and zero, with a margin.
  double lo = std::min(0.0, row.update_change), hi = std::max(0.0, row.update_change);
  for (double v : row.random_changes) lo = std::min(lo, v), hi = std::max(hi, v);
  if (hi <= lo) hi = lo + 1e-12;
  const double margin = 0.04 * (hi - lo);
  lo -= margin, hi += margin;
  const int64_t plot_w = kPlotR - kPlotL, plot_h = kPlotB - kPlotT;
  auto x_of = [&](double v) { return left + kPlotL + int64_t(std::lround((v - lo) / (hi - lo) * double(plot_w - 1))); };
  std::vector<int64_t> counts(kProbeBins, 0);
  for (double v : row.random_changes)
    ++counts[size_t(std::clamp<int64_t>(int64_t((v - lo) / (hi - lo) * kProbeBins), 0, kProbeBins - 1))];
  const int64_t most = std::max<int64_t>(1, *std::max_element(counts.begin(), counts.end()));
  for (int64_t b = 0; b < kProbeBins; ++b) {
    const int64_t x0 = left + kPlotL + b * plot_w / kProbeBins, x1 = left + kPlotL + (b + 1) * plot_w / kProbeBins;
    const int64_t bar = counts[size_t(b)] * plot_h / most;
    canvas.rect(top + kPlotB - bar, x0 + 1, top + kPlotB, x1, kProbeGrey);
  }
  canvas.rect(top + kPlotB, left + kPlotL, top + kPlotB + 1, left + kPlotR, kProbeBlack);  // the axis
  const int64_t x0 = x_of(0.0);
  for (int64_t y = top + kPlotT; y < top + kPlotB; y += 6) canvas.rect(y, x0, y + 3, x0 + 1, kProbeBlue);  // zero, dashed
  const int64_t xu = x_of(row.update_change);
  canvas.rect(top + kPlotT, xu - 1, top + kPlotB, xu + 2, kProbeRed);  // the update
  // Ticks: the range's ends, and 0 where it does not crowd them.
  const int64_t ty = top + kPlotB + 5;
  const auto lo_s = probe_number(lo), hi_s = probe_number(hi);
  canvas.text(ty, left + kPlotL, lo_s, kProbeBlack);
  canvas.text(ty, left + kPlotR - ProbeCanvas::width_of(hi_s), hi_s, kProbeBlack);
  if (x0 - 4 > left + kPlotL + ProbeCanvas::width_of(lo_s) && x0 + 8 < left + kPlotR - ProbeCanvas::width_of(hi_s))
    canvas.text(ty, x0 - 3, "0", kProbeBlue);
  canvas.text(ty, left + kPlotL + plot_w / 2 - ProbeCanvas::width_of("dL") / 2, "dL", kProbeBlack);
}

}  // namespace

torch::Tensor random_step_histogram(const std::vector<ProbePanel>& panels, int64_t columns) {
  columns = std::max<int64_t>(1, std::min<int64_t>(columns, int64_t(panels.size())));
  const int64_t rows = (int64_t(panels.size()) + columns - 1) / columns;
  const int64_t legend = 3 * kProbeLine;
  ProbeCanvas canvas(legend + rows * kPanelH, columns * kPanelW);
  // The legend: what the colours are.
  int64_t x = kPlotL;
  canvas.text(6, x, "loss change dL after a step:", kProbeBlack);
  x += ProbeCanvas::width_of("loss change dL after a step:  ");
  canvas.rect(6, x, 6 + 10, x + 10, kProbeGrey);
  canvas.text(6, x + 14, "random steps", kProbeBlack);
  x += 14 + ProbeCanvas::width_of("random steps  ");
  canvas.rect(6, x, 6 + 10, x + 3, kProbeRed);
  canvas.text(6, x + 8, "update", kProbeBlack);
  x += 8 + ProbeCanvas::width_of("update  ");
  canvas.rect(6, x + 1, 6 + 4, x + 2, kProbeBlue);
  canvas.rect(6 + 7, x + 1, 6 + 10, x + 2, kProbeBlue);
  canvas.text(6, x + 8, "0", kProbeBlack);
  canvas.text(6 + kProbeLine, kPlotL, "z = (dL update - mean dL random) / std: negative = update better", kProbeBlack);
  for (size_t i = 0; i < panels.size(); ++i)
    draw_panel(canvas, legend + int64_t(i) / columns * kPanelH, int64_t(i) % columns * kPanelW, panels[i]);
  return torch::from_blob(canvas.px.data(), {canvas.h, canvas.w, 3}, torch::kUInt8).clone();
}

}  // namespace blocklab
